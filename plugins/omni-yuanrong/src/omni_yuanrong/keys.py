"""Map connector keys onto the datasystem worker's key alphabet.

The worker accepts keys matching ``^[a-zA-Z0-9\\-_!@#%^*()+=:;]*$`` of at most 255
characters.  A store key is ``{key}:{from}_{to}`` as upstream writes it; any
character outside the alphabet (and ``%`` itself) is percent-encoded as its
UTF-8 bytes, so plain keys stay byte-identical to upstream's while every other
key still maps to a distinct, legal store key.  In the stage ids ``_`` and
``:`` are encoded too, which makes the split of the edge suffix unambiguous.
"""

from __future__ import annotations

import string

from omni_core import validate_key

MAX_STORE_KEY_LENGTH = 255
_SAFE = frozenset(string.ascii_letters + string.digits + "-_!@#^*()+=:;")


def _encode(text: str, also_escape: str = "") -> str:
    if _SAFE.issuperset(text) and not any(c in also_escape for c in text):
        return text
    out = []
    for char in text:
        if char in _SAFE and char not in also_escape:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def store_key(key: str, from_stage: str, to_stage: str) -> str:
    """The worker key for ``key`` on the edge ``from_stage -> to_stage``.

    Raises ValueError for keys every connector rejects (empty, ``/``, NUL, too
    long) and for keys whose encoded form exceeds the worker's 255 characters.
    """
    validate_key(key)
    encoded = f"{_encode(key)}:{_encode(str(from_stage), '_:')}_{_encode(str(to_stage), '_:')}"
    if len(encoded) > MAX_STORE_KEY_LENGTH:
        raise ValueError(
            f"connector key {key[:40]!r} on edge {from_stage}->{to_stage} encodes to a {len(encoded)}-character "
            f"datasystem key (the worker accepts at most {MAX_STORE_KEY_LENGTH})"
        )
    return encoded
