"""Model types (one module each in ``types/``), the registry that finds them, and the framework adapters that fit, save and load them."""
