-- The revision gateway processes poll (SQLite has no notifications): every change to
-- what gateways serve bumps it.
CREATE TABLE config_revision (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO config_revision (id, value) VALUES (1, 0);

CREATE TRIGGER backends_insertd AFTER INSERT ON backends BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER backends_updated AFTER UPDATE ON backends BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER backends_deleted AFTER DELETE ON backends BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER products_insertd AFTER INSERT ON products BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER products_updated AFTER UPDATE ON products BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER products_deleted AFTER DELETE ON products BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER application_plans_insertd AFTER INSERT ON application_plans BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER application_plans_updated AFTER UPDATE ON application_plans BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER application_plans_deleted AFTER DELETE ON application_plans BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER accounts_insertd AFTER INSERT ON accounts BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER accounts_updated AFTER UPDATE ON accounts BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER accounts_deleted AFTER DELETE ON accounts BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER applications_insertd AFTER INSERT ON applications BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER applications_updated AFTER UPDATE ON applications BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER applications_deleted AFTER DELETE ON applications BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER proxy_configs_insertd AFTER INSERT ON proxy_configs BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER proxy_configs_updated AFTER UPDATE ON proxy_configs BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER proxy_configs_deleted AFTER DELETE ON proxy_configs BEGIN UPDATE config_revision SET value = value + 1 WHERE id = 1; END;
