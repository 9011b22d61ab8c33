"""What mlplat's products promise each other, in one place.

The stack program and its components (``mlplat.components``, ``mlplat.infra``), the trainer
(``mlplat.training``) and the model server (``mlplat.serving``) never import one another (a test walks every
import); what one renders and the other runs meets here:

- :mod:`~mlplat.contracts.http`: the server's port and paths (probes, metrics, inference);
- :mod:`~mlplat.contracts.serving_env`: the ``MLPLAT_SERVING_*`` variables a workload may set (the names of the
  server's settings; a test keeps them equal to its settings model);
- :mod:`~mlplat.contracts.exit_codes`: the trainer's exit codes, which the TrainingJob's podFailurePolicy reads;
- :mod:`~mlplat.contracts.training_config`: the trainer's config, which a TrainingJob carries and the stack config
  validates; :mod:`~mlplat.contracts.training_env`: the variables a TrainingJob's pods set for the trainer;
- :mod:`~mlplat.contracts.reference_stats`: the reference statistics the trainer ships with a model and the server
  scores drift against.

It depends on the base install only (the standard library, pydantic, PyYAML): no torch, no Pulumi, no web framework.
"""
