"""Pareto fronts held to the brute-force definition; the fronts of trials; the table; the plot."""
from hypothesis import given, strategies as st

from minicompress.sweep.pareto import format_table, fronts, pareto_front
from minicompress.sweep.plot import plot_pareto


def dominates(a, b) -> bool:
    """a dominates b: no worse in every cost, better in one (the definition, written out)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def brute_force_front(points) -> list[int]:
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


# small integer coordinates: many ties and duplicate points
points = st.integers(1, 3).flatmap(lambda k: st.lists(st.tuples(*[st.integers(0, 6)] * k), max_size=40))


@given(points)
def test_front_is_exactly_the_non_dominated_points(pts):
    assert pareto_front(pts) == brute_force_front(pts)


@given(st.lists(st.tuples(st.floats(-1, 1, allow_nan=False), st.floats(0, 1e6, allow_nan=False)), max_size=60))
def test_front_on_float_points(pts):
    front = pareto_front(pts)
    assert front == brute_force_front(pts)
    if pts:
        assert front                                                   # a non-empty set has a front


def trial(tid, accuracy, size, latency, status="done"):
    if status != "done":
        return {"id": tid, "params": {"k": tid}, "status": status, "error": "boom"}
    return {"id": tid, "params": {"k": tid}, "status": "done",
            "final": {"accuracy": accuracy, "bytes_on_disk": size, "latency_ms_per_sample": latency, "macs": 10}}


TRIALS = [trial("a", 0.90, 1000, 0.5), trial("b", 0.95, 4000, 0.2), trial("c", 0.85, 2000, 0.1),
          trial("d", 0.80, 3000, 0.6), trial("e", 0, 0, 0, status="failed"), trial("f", 0.95, 4000, 0.2)]


def test_fronts_of_trials_accuracy_up_size_and_latency_down_failed_ignored():
    front = fronts(TRIALS)
    assert front["pareto_size"] == ["a", "b", "f"]                    # c: a is smaller and better; f ties b
    assert front["pareto_latency"] == ["b", "c", "f"]                 # a: c is faster, b better and faster
    assert front["pareto"] == ["a", "b", "c", "f"]                    # d is dominated by a in all three


def test_table_marks_the_fronts_and_the_failed_trials():
    table = format_table(TRIALS, ["k"], fronts(TRIALS)).splitlines()
    assert table[0] == "| id | k | status | accuracy | bytes on disk | MACs | latency ms/sample | front |"
    assert table[2] == "| a | a | done | 0.9000 | 1,000 | 10 | 0.5000 | size |"
    assert table[3].endswith("| size, latency |") and table[4].endswith("| latency |")
    assert table[5].endswith("| 0.6000 |  |")
    assert table[6] == "| e | e | failed | | | | | |"


def test_plot_is_written_atomically_and_skipped_without_done_trials(tmp_path):
    assert plot_pareto(TRIALS, fronts(TRIALS), tmp_path / "p.png") == "p.png"
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
    assert plot_pareto(TRIALS[4:5], fronts(TRIALS[4:5]), tmp_path / "q.png") is None
