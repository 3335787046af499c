"""Config: the YAML file, its typed models, matrices, templates and resolution."""
