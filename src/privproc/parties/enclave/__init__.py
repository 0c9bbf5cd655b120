"""The enclave: the attested, stateless workload that runs the model. Its release measures this
folder, the cores and contracts it imports, its model and its config (`closure.py`)."""
