-- The quickstart's shop database, for `arbiter sql proxy` (sql.cedar decides):
--   psql postgres://postgres@127.0.0.1:5432/postgres -c 'CREATE DATABASE shop'
--   psql postgres://postgres@127.0.0.1:5432/shop -f examples/quickstart/shop.sql
-- Two tenants, acme and globex, share both tables.
CREATE TABLE customers (
  id     int PRIMARY KEY,
  name   text NOT NULL,
  tenant text NOT NULL
);
CREATE TABLE orders (
  id       int PRIMARY KEY,
  customer int NOT NULL REFERENCES customers (id),
  tenant   text NOT NULL,
  total    numeric(10, 2) NOT NULL
);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace', 'acme'),
  (2, 'Grace Hopper', 'globex'),
  (3, 'Alan Turing', 'acme');
INSERT INTO orders VALUES
  (101, 1, 'acme', 250.00),
  (102, 2, 'globex', 99.90),
  (103, 3, 'acme', 1200.00),
  (104, 2, 'globex', 15.00);
