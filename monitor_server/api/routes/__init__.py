"""The routers, one a resource; none imports another."""
