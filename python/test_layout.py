"""The ctypes structs against include/kvs_signaling.h: the same fields in the
same order (parsed from the header), at the same offsets and sizes, and the
same struct sizes (printed by a C program compiled against the header); the
enums with the header's values.

Needs a C compiler (cc, or $CC) and the repository's header; skipped without
them. At import, the binding itself checks only the sizes the library writes.
"""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

from support import ROOT

import kvs_signaling as kvs  # noqa: E402

HEADER = os.path.join(ROOT, "include", "kvs_signaling.h")
STRUCTS = [
    kvs.kvs_tag,
    kvs.kvs_ice_server,
    kvs.kvs_message,
    kvs.kvs_status,
    kvs.kvs_client_config,
    kvs.kvs_client_metrics,
    kvs.kvs_ice_candidate,
]


def header_fields(text: str, name: str):
    """Field names of `typedef struct name { ... } name;`, in order."""
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (name, name), text, re.S)
    assert body, f"{name} not in the header"
    code = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    fields = []
    for decl in code.split(";")[:-1]:
        # The last identifier once any array bound is gone (callbacks are typedefs).
        fields.append(re.findall(r"\w+", re.sub(r"\[[^\]]*\]", "", decl))[-1])
    return fields


@pytest.fixture(scope="module")
def header_text():
    if not os.path.isfile(HEADER):
        pytest.skip(f"no header at {HEADER}")
    with open(HEADER, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory, header_text):
    """{struct: size, "struct.field": (offset, size)} as the C compiler sees them."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "kvs_signaling.h"', "int main(void) {"]
    for struct in STRUCTS:
        name = struct.__name__
        lines.append(f'  printf("{name} %zu\\n", sizeof(struct {name}));')
        for field, _ in struct._fields_:
            lines.append(
                f'  printf("{name}.{field} %zu %zu\\n", offsetof(struct {name}, {field}), '
                f"sizeof(((struct {name} *)0)->{field}));"
            )
    lines += ["  return 0;", "}"]
    tmp = tmp_path_factory.mktemp("layout")
    source, program = tmp / "layout.c", tmp / "layout"
    source.write_text("\n".join(lines) + "\n")
    subprocess.run(
        [cc, "-std=c11", "-I", os.path.dirname(HEADER), "-o", str(program), str(source)], check=True
    )
    out = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout
    layout = {}
    for line in out.splitlines():
        key, *numbers = line.split()
        layout[key] = tuple(int(n) for n in numbers) if len(numbers) > 1 else int(numbers[0])
    return layout


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda s: s.__name__)
def test_fields_match_header(struct, header_text):
    assert [f for f, _ in struct._fields_] == header_fields(header_text, struct.__name__)


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda s: s.__name__)
def test_offsets_and_sizes_match_c(struct, c_layout):
    name = struct.__name__
    assert ctypes.sizeof(struct) == c_layout[name]
    for field, _ in struct._fields_:
        descriptor = getattr(struct, field)
        assert (descriptor.offset, descriptor.size) == c_layout[f"{name}.{field}"], field


def test_library_writes_the_declared_config():
    """The load-time probe measures exactly this binding's size against the
    library built from the same header, and refuses a binding struct that the
    library would only partly fill."""
    measured = kvs._written_len(
        lambda buf, n: kvs._kvs_client_config_init(ctypes.cast(buf, ctypes.POINTER(kvs.kvs_client_config)), n),
        "kvs_client_config_init",
        ctypes.alignment(kvs.kvs_client_config),
    )
    assert measured == ctypes.sizeof(kvs.kvs_client_config)

    class Newer(ctypes.Structure):
        _fields_ = kvs.kvs_client_config._fields_ + [("a_later_field", ctypes.c_uint64)]

    with pytest.raises(kvs.LibraryMismatchError):
        kvs._require_size(Newer, measured)


ENUMS = [
    (kvs.Result, "KVS_"),
    (kvs.Role, "KVS_ROLE_"),
    (kvs.State, "KVS_STATE_"),
    (kvs.MessageType, "KVS_MESSAGE_TYPE_"),
    (kvs.StatusOrigin, "KVS_STATUS_ORIGIN_"),
    (kvs.LogLevel, "KVS_LOG_LEVEL_"),
]


@pytest.mark.parametrize("enum_type,prefix", ENUMS, ids=[e.__name__ for e, _ in ENUMS])
def test_enum_values_match_header(enum_type, prefix, header_text):
    c_name = enum_type.__doc__.strip().rstrip(".")  # e.g. "kvs_result."
    body = re.search(r"^enum %s\n.*?\{(.*?)\};" % c_name, header_text, re.S | re.M)
    assert body, c_name
    values = {k[len(prefix):]: int(v) for k, v in re.findall(r"^  (KVS_\w+) = (\d+)", body.group(1), re.M)}
    assert {m.name: int(m) for m in enum_type} == values
