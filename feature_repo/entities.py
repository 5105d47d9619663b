"""The entity every view is keyed by: ``user`` (join key ``user_id``, a string), as a builder.

A function rather than a module-level object: ``feast apply`` imports this file on its own, and an
Entity defined here at module level would be registered a second time through ``repo.py``.
"""

from __future__ import annotations

from feast import Entity
from feast.value_type import ValueType

USER_KEY = "user_id"


def user() -> Entity:
    return Entity(name="user", join_keys=[USER_KEY], value_type=ValueType.STRING,
                  description="a user of the ad platform (user_id of the lake's tables)")
