"""What the server is about, free of HTTP and SQL: the API's models, the command vocabulary,
rule operators, log records, and the errors a client can cause."""
