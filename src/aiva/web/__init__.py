"""The Starlette application: factory, lifespan, middleware and routes."""
