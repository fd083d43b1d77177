"""The fine-tuned model outside torch: exported to a CPU runtime (export), encoded from its folder (encoder),
checked against torch (verify) and served through MLflow (pyfunc)."""
