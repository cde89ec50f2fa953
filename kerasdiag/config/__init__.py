"""Configuration: the structured schema with its validators, composition from ``conf/``.

No TensorFlow here: a bad config is reported in a fraction of a second.
"""

from kerasdiag.config.compose import (
    CONF_DIR,
    composition_error,
    load_config,
    register_schema,
    typed,
    validate_config,
)
from kerasdiag.config.schema import Config, validate_doctor_config

__all__ = [
    "CONF_DIR",
    "Config",
    "composition_error",
    "load_config",
    "register_schema",
    "typed",
    "validate_config",
    "validate_doctor_config",
]
