"""HTTP API v1: the routers (`routes/`), what a handler gets (`deps`), access control,
body limits and the one error shape."""
