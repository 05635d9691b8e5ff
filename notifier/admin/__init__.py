"""The admin API: the application, its auth and errors (`app`), and one module per resource,
each with its own routes."""
