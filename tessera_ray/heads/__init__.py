"""Downstream heads on embeddings: probes, classifiers, regressors, maps and false-colour views."""
