"""What the tests and the benchmark both stand on: a scratch PostgreSQL database and the whole
platform on a local Ray (no production module imports it)."""
