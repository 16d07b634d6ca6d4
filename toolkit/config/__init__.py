"""The run config: its schema and loader (``schema``) and the checks that span
fields (``checks``). Every problem is one line naming its field path.

Uses nothing else in ``toolkit/`` and no torch."""

from amalgam.toolkit.config.schema import Config, TeacherConfig, TrainingConfig, config_hash, dump_config, load_config

__all__ = ["Config", "TeacherConfig", "TrainingConfig", "config_hash", "dump_config", "load_config"]
