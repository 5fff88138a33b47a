"""Owner references: every child points at its `GamificationProgram`, so deleting the program
lets the garbage collector delete the children (the namespace first of all).

A namespaced object may have a cluster-scoped owner (the program is cluster-scoped); the
reverse is what Kubernetes forbids. The reference has the shape `kopf.adopt` writes, and is
added only once per owner uid, so calling both `owned` and `kopf.adopt` is harmless.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gamify.program import API_GROUP, API_VERSION, KIND


def owner_reference(owner_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The reference to a program, from its metadata (`name` and `uid` are required)."""
    if not owner_meta.get("name") or not owner_meta.get("uid"):
        raise ValueError("an owner reference needs the owner's metadata.name and metadata.uid")
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": owner_meta["name"],
        "uid": owner_meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(obj: Mapping[str, Any], owner_meta: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `obj` owned by the program whose metadata is `owner_meta`."""
    result = copy.deepcopy(dict(obj))
    reference = owner_reference(owner_meta)
    refs = result.setdefault("metadata", {}).setdefault("ownerReferences", [])
    if not any(ref.get("uid") == reference["uid"] for ref in refs):
        refs.append(reference)
    return result
