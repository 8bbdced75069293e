"""Hostile or careless mapping files: each fails alone, quickly, in bounded memory, with one short
line naming the file; and YAML means what a reader of the file would think it means."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_mapping import GOOD, problems, write

from etl.common.errors import MappingError
from etl.mapping import MAX_BYTES, load_mapping, load_mapping_cached

ROOT = Path(__file__).resolve().parent.parent
MEMORY = 1_500_000_000  # bytes of address space a hostile file may not get past


def billion_laughs() -> str:
    """The contract example plus ~350 bytes of aliases: its value map, expanded, holds 9**9 strings."""
    lines = ['x:', '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"  {name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n" + GOOD.replace(
        "riskType: {column: kind, values: {设备: 0, 作业: 1}}", "riskType: {column: kind, values: {设备: *i}}")


def run_bounded(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Python code in a child limited to MEMORY bytes and `timeout` seconds: what a hostile file
    does to it cannot hurt the test run (or the machine)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True, preexec_fn=limit)


def one_problem(path: Path, *, cached: Path | None = None) -> str:
    with pytest.raises(MappingError) as err:
        load_mapping_cached(path, cached) if cached else load_mapping(path)
    assert len(err.value.problems) == 1
    return err.value.problems[0]


def test_an_alias_bomb_is_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    bomb = write(tmp_path, billion_laughs(), "bomb.yaml")
    assert bomb.stat().st_size < 1200
    done = run_bounded(f"""
        import time
        from pathlib import Path
        from etl.common.errors import MappingError
        from etl.mapping import load_mapping
        start = time.monotonic()
        try:
            load_mapping(Path({str(bomb)!r}))
        except MappingError as e:
            print(len(e.problems), time.monotonic() - start, e)
        """)
    assert done.returncode == 0, done.stderr[-2000:]
    count, seconds, message = done.stdout.split(" ", 2)
    assert count == "1" and float(seconds) < 5
    assert "bomb.yaml [line" in message and "aliases (*name) expand this file" in message


def test_aliases_within_reason_still_work(tmp_path: Path) -> None:
    levels = '{"1": 重大风险, "2": 较大风险, "3": 一般风险, "4": 低风险}'
    text = GOOD.replace(f"inherentriskLevel: {{column: init_level, values: {levels}}}",
                        f"inherentriskLevel: {{column: init_level, values: &levels {levels}}}")
    text = text.replace(f"remainriskLevel: {{column: rest_level, values: {levels}}}",
                        "remainriskLevel: {column: rest_level, values: *levels}")
    assert "*levels" in text and "&levels" in text
    fields = load_mapping(write(tmp_path, text)).datasets["06"].fields
    assert fields["remainriskLevel"].values == fields["inherentriskLevel"].values


def test_an_alias_inside_what_it_names_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("key: [id]", "key: &k [id, *k]")
    assert "refers to the value that contains it" in one_problem(write(tmp_path, text))


@pytest.mark.parametrize("cached", [False, True])
def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path, cached: bool) -> None:
    path = write(tmp_path, GOOD + "#" * MAX_BYTES + "\n")
    found = one_problem(path, cached=tmp_path / "cache" if cached else None)
    assert "more than a mapping's 1,000,000" in found and "unit.yaml" in found


@pytest.mark.parametrize("cached", [False, True])
def test_what_is_not_a_regular_file_is_refused_without_reading_it(tmp_path: Path, cached: bool) -> None:
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.yaml")
    cache = tmp_path / "cache" if cached else None
    start = time.monotonic()
    for name in ("folder.yaml", "zero.yaml", "pipe.yaml"):
        assert "not a regular file" in one_problem(tmp_path / name, cached=cache), name
    assert time.monotonic() - start < 5
    assert "no such mapping file" in one_problem(tmp_path / "missing.yaml", cached=cache)


def test_a_link_to_dev_zero_does_not_read_forever_even_cached(tmp_path: Path) -> None:
    """Before, the cached loader read the link whole: memory until the process died."""
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    done = run_bounded(f"""
        from pathlib import Path
        from etl.common.errors import MappingError
        from etl.mapping import load_mapping_cached
        try:
            load_mapping_cached(Path({str(tmp_path / 'zero.yaml')!r}), Path({str(tmp_path / 'c')!r}))
        except MappingError as e:
            print(e)
        """, timeout=30)
    assert done.returncode == 0 and "not a regular file" in done.stdout, done.stderr[-2000:]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0)
    assert "cannot be read (Permission denied)" in one_problem(path)


def test_not_utf8_and_binary_files_fail_with_one_line(tmp_path: Path) -> None:
    gbk = tmp_path / "gbk.yaml"  # what a Chinese Windows editor may save
    gbk.write_bytes(GOOD.encode("gbk"))
    assert one_problem(gbk).endswith("gbk.yaml [line 3] not UTF-8: save the file as UTF-8")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 40)
    assert "binary.yaml" in one_problem(binary)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"unit:\x00\x01\x02 x\n")
    assert "nul.yaml" in one_problem(nul)


def test_messages_quote_huge_keys_and_values_only_in_part(tmp_path: Path) -> None:
    huge = "界" * 300_000  # ~900 KB in UTF-8, under the size limit
    texts = [
        GOOD.replace("riskNo: point_no", f"{huge}: point_no"),              # unknown field
        GOOD.replace("riskNo: point_no", f"riskNo: point_no\n      {huge}: a\n      {huge}: b"),
        GOOD.replace('"06":', f'"{huge}":'),                                 # unknown txCode
        GOOD.replace("{设备: 0, 作业: 1}", f"{{设备: {huge}, 作业: 1}}"),      # value not allowed
        GOOD.replace("url_env: UNIT_X_SOURCE_URL", f"url_env: UNIT_X_SOURCE_URL\n  {huge}: x"),
    ]
    for n, text in enumerate(texts):
        found = problems(write(tmp_path, text, f"u{n}.yaml"))
        assert found and all(len(p) <= 500 for p in found), (n, [len(p) for p in found])
        assert sum(len(p) for p in found) < 5000


def test_a_huge_number_is_text_not_a_crash(tmp_path: Path) -> None:
    """Python refuses to print an int of more than 4,300 digits: such a key crashed every message."""
    digits = "9" * 5000
    found = problems(write(tmp_path, GOOD.replace("{设备: 0,", f"{{设备: {digits},")))
    assert len(found) == 1 and f"{digits[:79]}… not allowed for riskType" in found[0]
    sexagesimal = "1:" * 3000 + "1"  # YAML 1.1's base 60: an int of ~5,300 digits
    text = GOOD.replace("riskNo: point_no", f"riskNo:\n        value: {sexagesimal}")
    m = load_mapping(write(tmp_path, text, "b.yaml"))
    assert m.datasets["06"].fields["riskNo"].value == sexagesimal


def test_a_problem_line_is_capped_with_an_ellipsis() -> None:
    err = MappingError(["short", "x" * 10_000_000])
    assert err.problems[0] == "short" and len(err.problems[1]) == 500
    assert err.problems[1].endswith("…") and len(str(err)) == 506


@pytest.mark.parametrize(("first", "second", "shown"), [
    ('"04"', "4", "'04' and 4 both name txCode 04"),
    ("6", '"06"', "6 and '06' both name txCode 06"),
])
def test_two_keys_for_one_tx_code_are_refused(tmp_path: Path, first: str, second: str,
                                              shown: str) -> None:
    text = GOOD.replace('"06":', f"{first}:") + GOOD[GOOD.index('  "06":'):].replace('"06":', f"{second}:", 1)
    found = problems(write(tmp_path, text))
    assert any(f"[datasets.{shown[-2:]}] {shown}: keep one" in p for p in found), found


def test_yes_no_on_off_stay_text_true_false_stay_booleans(tmp_path: Path) -> None:
    text = GOOD.replace("riskName: point_name", "riskName: {column: point_name, values: "
                        "{yes: 是, no: 否, on: 开, Off: 关, Y: 有, n: 无, 1: 一}}")
    text = text.replace("key: [id]", "key: [no]").replace("dutyMan: duty_man", "dutyMan: off")
    spec = load_mapping(write(tmp_path, text.replace("value: 1}", "value: yes}"))).datasets["06"]
    assert spec.fields["riskName"].values == {"yes": "是", "no": "否", "on": "开", "Off": "关",
                                              "Y": "有", "n": "无", "1": "一"}
    assert (spec.key, spec.fields["dutyMan"].column, spec.deleted.value) == (["no"], "off", "yes")
    flagged = load_mapping(write(tmp_path, text.replace("value: 1}", "value: true}"), "b.yaml"))
    assert flagged.datasets["06"].deleted.value is True


def test_an_unknown_unit_template_name_is_refused_naming_the_valid_ones(tmp_path: Path) -> None:
    text = GOOD.replace('default: "{unit.comName}"', 'default: "{unit.comname}（{unit.orgNo}）{duty}"')
    found = problems(write(tmp_path, text))
    assert found == [f"{tmp_path / 'unit.yaml'} [datasets.06.fields.dutyName.default] {{unit.comname}} "
                     "is not a unit's value: use {unit.orgNo}, {unit.comName}"]
    ok = load_mapping(write(tmp_path, GOOD.replace("{unit.comName}", "{unit.orgNo} {duty_col}")))
    assert "duty_col" in ok.datasets["06"].columns()
