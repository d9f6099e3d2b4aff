"""Untrusted JSON and YAML inputs: size, depth, number and shape limits, each refused in one line, fast."""

from __future__ import annotations

import json
import time

import pytest

from nni_bio.cli import main
from nni_bio.core.safe_json import (MAX_DEPTH, UnsafeJsonError, genotype_schema, nesting_depth, read_json, rule_map_schema,
                               sample_schema)


def test_nesting_depth_ignores_brackets_inside_strings():
    assert nesting_depth('{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert nesting_depth('"\\"[["') == 0 and nesting_depth("[]") == 1


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, f"nested 100000 levels deep; at most {MAX_DEPTH}"),
    ('{"a": ' + "9" * 100_000 + "}", "a number of 100,000 characters"),
    ('{"a": 1e999}', "not finite"),
    ('{"a": NaN}', "NaN is not a number JSON allows"),
    ('{"a": ', "is not valid JSON"),
    ('"x' + "y" * (2 << 20) + '"', "more than the 1,048,576"),
])
def test_crafted_documents_are_refused_quickly_in_one_line(text, message):
    started = time.perf_counter()
    with pytest.raises(UnsafeJsonError) as caught:
        read_json(text, what="--sample", is_path=False)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("value, schema, message", [
    ([1, 2], sample_schema, "must be a JSON object of slot -> candidate"),
    ({"conv1": {"nested": 1}}, sample_schema, "not a candidate name"),
    ({"space": "tiny", "sample": {}, "evil": 1}, genotype_schema, "unknown key(s) 'evil'"),
    ({"space": "tiny"}, genotype_schema, "lacks 'sample'"),
    ({"space": ["tiny"], "sample": {}}, genotype_schema, "'space' must be a space name"),
    ({"space": "tiny", "args": [], "sample": {}}, genotype_schema, "'args' must be a JSON object"),
    ({"*": 3}, rule_map_schema, "pattern -> rule name"),
])
def test_schemas_name_what_is_wrong(value, schema, message):
    with pytest.raises(UnsafeJsonError, match=message.replace("(", r"\(").replace(")", r"\)")):
        schema(value, "input")


def test_the_commands_use_the_limits(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"space": "tiny", "sample": ' + "[" * 5000 + "]" * 5000 + "}")
    assert main(["train", "--genotype", str(deep), "--output", str(tmp_path / "out")]) == 2
    assert f"genotype {deep}: nested 5001 levels deep" in capsys.readouterr().err
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"space": "tiny", "sample": {}, "weights_url": "http://example.invalid"}))
    assert main(["train", "--genotype", str(unknown), "--output", str(tmp_path / "out")]) == 2
    assert "unknown key(s) 'weights_url'" in capsys.readouterr().err
    assert main(["train", "--model", "tiny-cnn", "--rule-map", "[" * 40 + "]" * 40, "--output", str(tmp_path)]) == 2
    assert "--rule-map: nested 40 levels deep" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_trial_sample_is_read_with_the_limits():
    from nni_bio.trial import next_sample

    assert next_sample('{"fc": "usf"}') == {"fc": "usf"}
    with pytest.raises(UnsafeJsonError, match="--sample: nested"):
        next_sample("[" * 50 + "]" * 50)


@pytest.mark.parametrize("text, message", [
    ("a: &a [x, x, x]\nb: [*a, *a]\n", "aliases (*a) are not accepted"),
    ("name: " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
    ("name: t\narms: {m: {a: {b: {c: {d: {e: {f: {g: 1}}}}}}}}\n", "nested 9 levels deep"),
])
def test_crafted_study_files_are_refused(tmp_path, text, message):
    from nni_bio.study import StudyConfigError, load_study

    path = tmp_path / "study.yml"
    path.write_text(text)
    with pytest.raises(StudyConfigError) as caught:
        load_study(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_oversized_study_file_is_refused_unread(tmp_path):
    from nni_bio.study import StudyConfigError, load_study

    path = tmp_path / "study.yml"
    path.write_text("# " + "x" * 300_000 + "\nname: t\n")
    with pytest.raises(StudyConfigError, match="300,011 bytes; a study file has at most 262,144"):
        load_study(path)
