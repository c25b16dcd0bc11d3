-- Demo orders the order actions read. Amounts in EUR.
CREATE TABLE IF NOT EXISTS demo_orders (
    order_id TEXT PRIMARY KEY,
    customer_email TEXT NOT NULL,
    customer_phone TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('processing', 'shipped', 'delivered', 'cancelled')),
    amount TEXT NOT NULL,
    eta TEXT NOT NULL
);
INSERT OR IGNORE INTO demo_orders VALUES
    ('12345', 'li.wei@example.com', '+86 138 0013 8000', 'Redmi Note 13', 'shipped', '199.00 EUR', '2026-12-03'),
    ('54321', 'anna.schmidt@example.com', '+49 151 2345 6789', 'Router AX3000', 'processing', '89.90 EUR', '2026-12-05'),
    ('11111', 'maria.garcia@example.com', '+34 612 345 678', 'USB-C charger', 'delivered', '19.99 EUR', '2026-11-20'),
    ('22222', 'jean.dupont@example.com', '+33 6 12 34 56 78', 'Phone case', 'cancelled', '12.50 EUR', '2026-11-25'),
    ('67890', 'john.smith@example.com', '+1 415 555 0100', 'Galaxy S25', 'processing', '899.00 EUR', '2026-12-08'),
    ('24680', 'chen.jing@example.com', '+86 139 1234 5678', 'SIM card (5G plan)', 'shipped', '0.00 EUR', '2026-12-01');
CREATE TABLE IF NOT EXISTS demo_accounts (
    email TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
INSERT OR IGNORE INTO demo_accounts VALUES
    ('li.wei@example.com', 'Li Wei'),
    ('anna.schmidt@example.com', 'Anna Schmidt'),
    ('maria.garcia@example.com', 'María García'),
    ('jean.dupont@example.com', 'Jean Dupont'),
    ('john.smith@example.com', 'John Smith'),
    ('chen.jing@example.com', 'Chen Jing');
-- Password-reset e-mails waiting for the mailer.
CREATE TABLE IF NOT EXISTS demo_password_resets (
    email TEXT NOT NULL,
    requested_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
