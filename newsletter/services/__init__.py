"""Services: the product's jobs, composed from the adapters and the domain."""
