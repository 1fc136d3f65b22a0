"""The report's sections beyond the kernels: shares that never add up past the run, the
deployment, the block roll-up, each collective's exposed and hidden time and what it waited
for, launch overhead on its own line, and the provenance of the JSON and HTML reports."""
import json
import re

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401
from compiler import api
from runtime.report import html_sections
from runtime.report.deployment import exposure
from runtime.report.text import summary_text

TWO_NODES = dict(devices=8, target_set={"system.devices_per_node": 4})


@pytest.fixture(scope="module")
def waiting_run():
    """tiny_moe's experts over two nodes of four, one micro-batch: the cores wait for the
    all-to-alls (nothing to overlap them with)."""
    return api.run("examples/tiny_moe.ds", "h800", plan="attn=dp,moe=ep", **TWO_NODES).run_result


def test_every_wait_is_given_to_the_launch_waited_for(waiting_run):
    run = waiting_run
    waits = [r for r in run.launches if r.exposed]
    assert waits
    for r in waits:
        waited = run.launches[r.waited_on]
        assert r.stream == "compute" and waited.stream != "compute"
        assert waited.end == pytest.approx(r.start - r.launching)   # its launch, by its mode
    assert sum(exposure(run).values()) == pytest.approx(sum(r.exposed for r in run.launches))


def test_shares_add_up_to_the_run_and_never_past_it(waiting_run):
    run = waiting_run
    text = summary_text(run)
    table = text.split("top stall\n")[1].split("\n\n")[0]
    shares = [float(line[34:].split()[2]) for line in table.splitlines()   # n, time us, %
              if not line.startswith("(")]
    overhead = float(re.search(r"\(([\d.]+)% of the run, the cores idle\)", text).group(1))
    assert sum(shares) + overhead <= 100.0 + 0.05 * (len(shares) + 1)     # rounding only
    assert sum(shares) + overhead >= 99.0           # the compute stream is never idle else
    blocks = html_sections.blocks(run)
    assert sum(float(b["share"]) for b in blocks) == pytest.approx(100.0, abs=0.35)
    comm = next(b for b in blocks if b["block"] == "communication")
    assert float(comm["step"]) > 0


def test_collectives_split_their_time_and_name_their_producer(waiting_run):
    rows = html_sections.collectives(waiting_run)
    assert {r["name"] for r in rows} == {"layer.*.moe.xe.a2a_1", "layer.*.moe.ye.a2a"}
    for r in rows:
        assert float(r["exposed"]) > 0 and r["after"] in ("layer.*.moe.xe_1", "layer.*.moe.ye")


def test_overlapped_collectives_are_hidden_not_counted_twice():
    run = api.run("examples/tiny_moe.ds", "h800", plan="attn=dp,moe=ep,mb=2",
                  **TWO_NODES).run_result
    rows = html_sections.collectives(run)
    assert rows and all(float(r["hidden"]) > 0 for r in rows)
    assert sum(float(b["share"]) for b in html_sections.blocks(run)) <= 100.0 + 0.35


def test_html_and_json_say_where_they_came_from(capsys, tmp_path):
    html, report = tmp_path / "r.html", tmp_path / "r.json"
    code, _, err = dsc(capsys, "run", "examples/tiny_moe.ds", "--target", "h800", "--devices",
                       "8", "--target-set", "system.devices_per_node=4", "--html", str(html),
                       "--json", str(report))
    assert code == 0, err
    page = html.read_text()
    for section in ("Deployment", "By block", "Collectives", "Provenance"):
        assert f"<h2>{section}</h2>" in page
    assert "launch overhead</td><td>" in page
    provenance = json.loads(report.read_text())["provenance"]
    assert provenance["target_overrides"] == {"system.devices_per_node": 4}
    assert provenance["command"] in page.replace("&#39;", "'")
    assert provenance["target_sha256"] in page
