"""The training configuration: the recipe sections, loaded from YAML and overridden from flags."""
