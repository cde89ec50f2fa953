"""Every way a model is built: the recipes' blocks (``blocks``), a run's model from its config
(``factory``: ``model.builder`` or ``model._target_``, strategy scope, precision, float32
outputs), the losses, optimizers and schedules, and ``tf.distribute`` strategies."""
