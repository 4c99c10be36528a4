#!/usr/bin/env python3
"""The schema's verdict on tests/contract/config-cases/: every valid/*.yaml conforms to
schema/config.schema.json and every invalid/*.yaml does not, with an error that points at the key named on
the file's first line (`# error: registries[1].name`). tests/config_schema.rs asserts the same verdicts for
the loader (Config::from_yaml), so the two agree file by file.

YAML is read the way the loader reads it: serde_yaml_ng resolves plain scalars with the YAML 1.2 core schema
(only true/false are booleans, `off` is a string, 0x.. and 0o.. are integers, 1_000 and 1:30 are strings),
rejects duplicate keys, and treats an empty document as "all defaults". PyYAML alone would apply YAML 1.1
(`off` -> False, `1:30` -> 90), so plain scalars are resolved here by a port of serde_yaml_ng's rules.

The schema's extension keywords, for rules JSON Schema cannot state, are implemented here:
  * `x-unique-by: PROPERTY` or `[PROPERTY, ...]`: no value occurs twice among the array items' PROPERTYs
    (array-valued properties count element by element; all listed properties share one namespace, so
    `[name, aliases]` means no alias repeats a name or another alias). The later occurrence is the error.
  * `x-glob: globset`: the string is a glob that globset's `Glob::new` compiles (a port of its parser's
    error cases: unclosed `[`, a reversed range like `[z-a]`, unopened or unclosed `{}`, a trailing backslash).

Every ```yaml block of docs/configuration.md must also be a file valid/doc-*.yaml (and every such file a block
of the docs), so the examples in the docs are checked here and by the loader.

Usage: check_config_schema.py [REPO_ROOT]   (needs jsonschema and PyYAML). Exit status 0 iff all agree.
"""

import json
import math
import re
import sys
from collections import deque
from pathlib import Path

import jsonschema
import yaml

# --------------------------------------------------------------------------------------------------------
# YAML 1.2 core-schema reading of plain scalars, as serde_yaml_ng 0.10 (de.rs: visit_untagged_scalar)
# --------------------------------------------------------------------------------------------------------
PLAIN = "tag:ociregistry.contract,2024:plain"
DIGITS = {2: "01", 8: "0-7", 10: "0-9", 16: "0-9a-fA-F"}


def _rust_int(text, radix, signed):
    """i/u128::from_str_radix: an optional sign, then digits of the radix only (no '_', no spaces)."""
    sign = "[+-]?" if signed else r"\+?"
    if not re.fullmatch(f"{sign}[{DIGITS[radix]}]+", text):
        return None
    return int(text, radix)


def _digits_but_not_number(scalar):
    s = scalar[1:] if scalar[:1] in ("+", "-") else scalar
    return len(s) > 1 and s.startswith("0") and s[1:].isdigit() and s.isascii()


def _parse_unsigned(scalar):
    unpositive = scalar[1:] if scalar.startswith("+") else scalar
    for prefix, radix in (("0x", 16), ("0o", 8), ("0b", 2)):
        if unpositive.startswith(prefix):
            rest = unpositive[2:]
            if rest[:1] in ("+", "-"):
                return None
            n = _rust_int(rest, radix, False)
            if n is not None:
                return n
    if unpositive[:1] in ("+", "-"):
        return None
    if _digits_but_not_number(scalar):
        return None
    return _rust_int(unpositive, 10, False)


def _parse_negative(scalar):
    for prefix, radix in (("-0x", 16), ("-0o", 8), ("-0b", 2)):
        if scalar.startswith(prefix):
            n = _rust_int("-" + scalar[3:], radix, True)
            if n is not None:
                return n
    if _digits_but_not_number(scalar):
        return None
    return _rust_int(scalar, 10, True)


def _parse_f64(scalar):
    unpositive = scalar
    if scalar.startswith("+"):
        unpositive = scalar[1:]
        if unpositive[:1] in ("+", "-"):
            return None
    if unpositive in (".inf", ".Inf", ".INF"):
        return math.inf
    if scalar in ("-.inf", "-.Inf", "-.INF"):
        return -math.inf
    if scalar in (".nan", ".NaN", ".NAN"):
        return math.nan
    # Rust's f64::from_str (finite results only; inf/nan spellings give non-finite values and are dropped)
    if re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", unpositive):
        value = float(unpositive)
        if math.isfinite(value):
            return value
    return None


def resolve_plain(v):
    if v in ("", "null", "Null", "NULL", "~"):
        return None
    if v in ("true", "True", "TRUE"):
        return True
    if v in ("false", "False", "FALSE"):
        return False
    n = _parse_unsigned(v)
    if n is not None and n < 2**128:
        return n
    n = _parse_negative(v)
    if n is not None and n >= -(2**127):
        return n
    if not _digits_but_not_number(v):
        f = _parse_f64(v)
        if f is not None:
            return f
    return v


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with serde_yaml_ng's scalar resolution and duplicate-key rejection."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            return PLAIN
        return super().resolve(kind, value, implicit)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


Yaml12Loader.add_constructor(PLAIN, lambda loader, node: resolve_plain(loader.construct_scalar(node)))


def load_config_yaml(text):
    """The config document as JSON-like data. No document, or an empty one (only comments, `---`), is `{}`:
    the loader gives the defaults for both (but rejects an explicit `~`)."""
    loader = Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == PLAIN and node.value == ""):
            return {}
        return loader.construct_document(node)
    finally:
        loader.dispose()


# --------------------------------------------------------------------------------------------------------
# The schema, with its extension keywords x-unique-by and x-glob
# --------------------------------------------------------------------------------------------------------
def _unique_by(validator, props, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    if isinstance(props, str):
        props = [props]
    first = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        for prop in props:
            value = item.get(prop)
            if value is None:  # absent or null: nothing to compare
                continue
            entries = (
                [((i, prop, j), v) for j, v in enumerate(value)]
                if isinstance(value, list)
                else [((i, prop), value)]
            )
            for path, v in entries:
                key = json.dumps(v, sort_keys=True)
                if key in first:
                    yield jsonschema.ValidationError(
                        f"{v!r} is listed twice ({render_path(first[key])} and {render_path(path)})",
                        path=deque(path),
                    )
                else:
                    first[key] = path


def glob_error(pattern):
    """Why globset 0.4's `Glob::new(pattern)` (default options) fails, or None when it compiles."""
    chars = list(pattern)
    i = 0
    depth = 0  # open `{` alternations
    while i < len(chars):
        c = chars[i]
        i += 1
        if c == "\\":
            if i >= len(chars):
                return "dangling '\\'"
            i += 1
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return "unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)"
            depth -= 1
        elif c == "[":
            if i < len(chars) and chars[i] in "!^":
                i += 1
            ranges = []
            first = True
            in_range = False
            while True:
                if i >= len(chars):
                    return "unclosed character class; missing ']'"
                c = chars[i]
                i += 1
                if c == "]" and not first:
                    break
                if c == "]" or (c == "-" and first):
                    ranges.append([c, c])
                elif c == "-" and not in_range:
                    in_range = True
                    first = False
                    continue
                elif in_range:
                    ranges[-1][1] = c
                    if c < ranges[-1][0]:
                        return f"invalid range; '{ranges[-1][0]}' > '{c}'"
                else:
                    ranges.append([c, c])
                in_range = False
                first = False
    if depth:
        return "unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)"
    return None


def _glob(validator, kind, instance, schema):
    if validator.is_type(instance, "string"):
        error = glob_error(instance)
        if error:
            yield jsonschema.ValidationError(f"{instance!r} is not a glob: {error}")


def validator_for(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    cls = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"x-unique-by": _unique_by, "x-glob": _glob}
    )
    return cls(schema)


def render_path(path):
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
    schema = json.loads((root / "schema/config.schema.json").read_text())
    validator = validator_for(schema)
    cases = root / "tests/contract/config-cases"
    passed = failed = 0

    def report(ok, name, detail):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")

    for kind in ("valid", "invalid"):
        files = sorted((cases / kind).glob("*.yaml"))
        if len(files) < 5:
            report(False, kind, f"too few cases in {cases / kind}")
        for f in files:
            name = f"{kind}/{f.name}"
            text = f.read_text()
            key = None
            if kind == "invalid":
                first = text.splitlines()[0] if text else ""
                if not first.startswith("# error: "):
                    report(False, name, "first line must be `# error: KEY`")
                    continue
                key = first[len("# error: "):].strip()
            try:
                data = load_config_yaml(text)
            except yaml.YAMLError as e:
                msg = str(e).splitlines()[0] if kind == "valid" else str(e).replace("\n", " ")
                ok = kind == "invalid" and key in msg
                report(ok, name, f"YAML rejected: {msg}")
                continue
            errors = list(validator.iter_errors(data))
            if kind == "valid":
                detail = "; ".join(f"{render_path(e.absolute_path) or '(root)'}: {e.message}" for e in errors)
                report(not errors, name, detail or "accepted")
                continue
            if not errors:
                report(False, name, f"accepted by the schema, expected an error about {key}")
                continue
            naming = [e for e in errors if render_path(e.absolute_path) == key or key in e.message]
            shown = naming[0] if naming else jsonschema.exceptions.best_match(errors)
            where = render_path(shown.absolute_path) or "(root)"
            report(bool(naming), name, f"{where}: {shown.message}"[:300])

    # The examples of docs/configuration.md are valid cases too: each ```yaml block is a valid/doc-*.yaml file.
    blocks = re.findall(r"^```yaml\n(.*?)^```$", (root / "docs/configuration.md").read_text(), flags=re.M | re.S)
    doc_files = {f.read_text(): f.name for f in sorted((cases / "valid").glob("doc-*.yaml"))}
    for n, block in enumerate(blocks, 1):
        name = f"docs/configuration.md example {n}"
        if block in doc_files:
            report(True, name, f"is valid/{doc_files[block]}")
        else:
            report(False, name, f"no valid/doc-*.yaml has this text: {block.splitlines()[0] if block else ''!r}...")
    for text, file in doc_files.items():
        if text not in blocks:
            report(False, f"valid/{file}", "is not a ```yaml block of docs/configuration.md (copy it there or rename it)")

    print(f"config-schema: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
