"""RecBole-style YAML defaults of recbole-mmfusion (overall, per model, per dataset)."""
