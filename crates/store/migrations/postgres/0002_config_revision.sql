-- Gateway nodes learn of configuration changes from any writer: every statement that
-- changes what gateways serve bumps one counter (for nodes that poll) and notifies
-- channel `tollgate_config` at commit (for nodes that listen).
CREATE TABLE config_revision (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);
INSERT INTO config_revision (id, value) VALUES (1, 0);

CREATE FUNCTION tollgate_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  revision BIGINT;
BEGIN
  UPDATE config_revision SET value = value + 1 WHERE id = 1 RETURNING value INTO revision;
  PERFORM pg_notify('tollgate_config', revision::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER backends_changed AFTER INSERT OR UPDATE OR DELETE ON backends
  FOR EACH STATEMENT EXECUTE FUNCTION tollgate_config_changed();
CREATE TRIGGER products_changed AFTER INSERT OR UPDATE OR DELETE ON products
  FOR EACH STATEMENT EXECUTE FUNCTION tollgate_config_changed();
CREATE TRIGGER application_plans_changed AFTER INSERT OR UPDATE OR DELETE ON application_plans
  FOR EACH STATEMENT EXECUTE FUNCTION tollgate_config_changed();
CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE OR DELETE ON accounts
  FOR EACH STATEMENT EXECUTE FUNCTION tollgate_config_changed();
CREATE TRIGGER applications_changed AFTER INSERT OR UPDATE OR DELETE ON applications
  FOR EACH STATEMENT EXECUTE FUNCTION tollgate_config_changed();
CREATE TRIGGER proxy_configs_changed AFTER INSERT OR UPDATE OR DELETE ON proxy_configs
  FOR EACH STATEMENT EXECUTE FUNCTION tollgate_config_changed();
