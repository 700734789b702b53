"""Which images one build left behind that are ours to remove (a pure rule over the daemon's listing).

The legacy builder commits one untagged image per Dockerfile step and names it in its output as
`` ---> <id>``. A failed or aborted build leaves those images behind, and only the final ``LABEL`` step
carries our labels, so label-based cleanup never finds them; a multi-stage build leaves every stage but
the last even when it succeeds. But the build output is the miner's text too: a ``RUN`` step can print
a `` ---> <id>`` line naming someone else's image. So an image is removed only when all of these hold:

1. its id was named in this build's output, or it is a parent or child of an image this rule already
   selected (one genuine id recovers its whole chain: a step committed after we stopped reading an
   aborted build, or ids a flood of fake lines pushed out of the bounded record);
2. it did not exist when the build began (the daemon's listing just before the build);
3. it has no tag and no registry digest;
4. it is not the built image nor one of its ancestors;
5. the daemon removes it without ``force`` and without pruning parents (see the adapter): a container
   using it, or a child image, makes the daemon refuse, and the refusal is accepted.

A miner cannot make this remove another's image: images that existed before the build are out by (2),
tagged ones by (3), and the id of an image created while the build runs (by another build) is unknown
inside the build's steps, which reach neither the daemon nor the network.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

# How the legacy builder names the image a step committed (or took from the cache).
_LAYER_LINE_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")
# How the daemon lists "no tag" and "no digest" for an image that has none.
_NO_TAG = "<none>:<none>"
_NO_DIGEST = "<none>@<none>"


def reported_layers(lines: Iterable[str]) -> list[str]:
    """Image ids named by `` ---> <id>`` lines, in order of first appearance."""
    seen: dict[str, None] = {}
    for line in lines:
        match = _LAYER_LINE_RE.match(line)
        if match:
            seen.setdefault(match.group(1), None)
    return list(seen)


def _untagged(entry: Mapping[str, Any]) -> bool:
    tags = entry.get("RepoTags") or []
    digests = entry.get("RepoDigests") or []
    return all(tag == _NO_TAG for tag in tags) and all(digest == _NO_DIGEST for digest in digests)


def _ancestors(image_id: str | None, by_id: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """``image_id`` and every parent above it that the listing knows."""
    out: set[str] = set()
    while image_id and image_id in by_id and image_id not in out:
        out.add(image_id)
        image_id = str(by_id[image_id].get("ParentId") or "")
    return out


def leftover_images(
    listing: Sequence[Mapping[str, Any]],
    reported: Sequence[str],
    existed_before: Collection[str],
    built: str | None = None,
) -> list[str]:
    """Ids of the images a build left that the rule above allows removing, children before parents.

    ``listing`` is the daemon's ``GET /images/json?all=1`` (``Id``, ``ParentId``, ``RepoTags``,
    ``RepoDigests``); ``reported`` the ids the build output named (short or full hex); ``existed_before``
    the full ids listed just before the build; ``built`` the image the build produced, if any.
    """
    by_id = {str(entry["Id"]): entry for entry in listing}
    fresh = {i for i, entry in by_id.items() if i not in existed_before and _untagged(entry)}
    fresh -= _ancestors(built, by_id)
    selected: set[str] = set()
    for short in reported:
        matches = [image_id for image_id in fresh if image_id.removeprefix("sha256:").startswith(short)]
        if len(matches) == 1:  # an ambiguous short id names nothing for certain
            selected.add(matches[0])
    grew = True
    while grew:
        parents = {str(by_id[i].get("ParentId") or "") for i in selected}
        related = {
            i for i in fresh - selected if i in parents or str(by_id[i].get("ParentId") or "") in selected
        }
        selected |= related
        grew = bool(related)

    among = {image_id: by_id[image_id] for image_id in selected}
    return sorted(selected, key=lambda image_id: (-len(_ancestors(image_id, among)), image_id))
