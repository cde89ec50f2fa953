"""Configuration: the structured schema, composition from ``conf/`` and value validation.

No TensorFlow here: a bad config is reported in a fraction of a second.
"""

from kerasdiag.config.compose import (
    CONF_DIR,
    config_error_line,
    load_config,
    register_schema,
    validate_config,
)
from kerasdiag.config.schema import Config

__all__ = [
    "CONF_DIR",
    "Config",
    "config_error_line",
    "load_config",
    "register_schema",
    "validate_config",
]
