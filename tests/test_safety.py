"""No file of the user's is modified unless it is the named output and --force is given (issue #11, item 2).

Every refusal is checked through the command line: exit 2, one ``headcut: error:`` line naming the
file, no traceback, nothing new written and every file that was there byte-identical (links and
their targets included).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import build, digest

import onnx_headcut.io as io_mod
import onnx_headcut.staging as staging
from onnx_headcut.errors import InputError, OutputError
from onnx_headcut.strip import read_metadata, strip

PHOTO = Path(__file__).resolve().parents[1] / "samples" / "images" / "chelsea.jpg"


def headcut(*args, cwd=None, timeout=120):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def snapshot(root: Path) -> dict:
    """Every entry under ``root``: a file's sha256, a link's target, or "dir"."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = p.relative_to(root).as_posix()
        out[key] = ("link", os.readlink(p)) if p.is_symlink() else "dir" if p.is_dir() else digest(p)
    return out


def refused(root: Path, *args, says: str, cwd=None) -> str:
    """Run headcut; assert exit 2, one error line containing ``says``, and nothing under ``root`` changed."""
    before = snapshot(root)
    code, out, err = headcut(*args, cwd=cwd)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("headcut: error: ") and says in lines[0], err
    assert "Traceback" not in out + err
    assert snapshot(root) == before
    return lines[0]


@pytest.fixture
def model(tmp_path) -> Path:
    p = tmp_path / "in.onnx"
    onnx.save(build("legacy"), str(p))
    return p


@pytest.fixture
def photo(tmp_path) -> Path:
    p = tmp_path / "photo.jpg"
    shutil.copy(PHOTO, p)
    return p


# -- 1. the whole output set is checked before any work ----------------------------------------------


@pytest.mark.parametrize("member", ["raw.onnx", "raw.head.json", "raw.onnx.data"])
def test_strip_refuses_any_existing_member_of_its_output_set(member, model, tmp_path):
    """raw.onnx.data is checked although this small model would not write it: one rule for every size."""
    (tmp_path / member).write_bytes(b"the user's file")
    msg = refused(tmp_path, "strip", model, "-o", tmp_path / "raw.onnx", says="already exists (use --force")
    assert member in msg


def test_strip_force_replaces_the_set(model, tmp_path):
    (tmp_path / "raw.onnx").write_bytes(b"old")
    (tmp_path / "raw.head.json").write_text("{}")
    code, _, err = headcut("strip", model, "-o", tmp_path / "raw.onnx", "--force")
    assert code == 0, err
    assert json.loads((tmp_path / "raw.head.json").read_text()) == read_metadata(tmp_path / "raw.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "raw.head.json", "raw.onnx"]


def test_convert_refuses_an_existing_different_head_json(tmp_path, model):
    strip(model, tmp_path / "raw.onnx", verify=False)
    (tmp_path / "raw.head.json").write_text('{"the user": "wrote this"}\n')
    msg = refused(tmp_path, "convert", tmp_path / "raw.onnx", "--to", "mnn", says="already exists (use --force")
    assert "raw.head.json" in msg


def test_convert_refuses_an_existing_engine_file(tmp_path, model):
    strip(model, tmp_path / "raw.onnx", verify=False)
    (tmp_path / "raw.bin").write_bytes(b"the user's weights")
    msg = refused(tmp_path, "convert", tmp_path / "raw.onnx", "--to", "ncnn", says="already exists (use --force")
    assert "raw.bin" in msg


def test_convert_leaves_the_sidecar_strip_wrote(tmp_path, model):
    pytest.importorskip("MNN", reason="engines extra not installed")
    strip(model, tmp_path / "raw.onnx", verify=False)
    side = tmp_path / "raw.head.json"
    before, mtime = digest(side), side.stat().st_mtime_ns
    code, out, err = headcut("convert", tmp_path / "raw.onnx", "--to", "mnn")
    assert code == 0, err
    assert "raw.mnn" in out and "raw.head.json" not in out.split("wrote", 1)[1]
    assert digest(side) == before and side.stat().st_mtime_ns == mtime


def test_detect_refuses_an_existing_image_and_force_replaces_it(tmp_path, model, photo):
    (tmp_path / "boxes.png").write_bytes(b"the user's picture")
    msg = refused(tmp_path, "detect", model, photo, "-o", tmp_path / "boxes.png", says="already exists (use --force")
    assert "boxes.png" in msg
    code, _, err = headcut("detect", model, photo, "-o", tmp_path / "boxes.png", "--force")
    assert code == 0, err
    assert (tmp_path / "boxes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_into_the_current_folder_keeps_a_users_file(tmp_path):
    (tmp_path / "yolov8-320.onnx").write_bytes(b"the user's own yolov8")
    (tmp_path / "notes.txt").write_text("unrelated\n")
    msg = refused(tmp_path, "sample", "-o", ".", says="already exists (use --force", cwd=tmp_path)
    assert "yolov8-320.onnx" in msg
    refused(tmp_path, "sample", "--family", "yolov8", "-o", ".", says="yolov8-320.onnx: already exists", cwd=tmp_path)
    code, out, err = headcut("sample", "--family", "yolov8", "-o", ".", "--force", cwd=tmp_path)
    assert code == 0, err
    assert onnx.load(str(tmp_path / "yolov8-320.onnx")).graph.node
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "yolov8-320.onnx"]


# -- 2. nothing the input depends on is ever written, even with --force -----------------------------


@pytest.mark.parametrize("force", [False, True])
def test_the_inputs_external_data_is_never_written(force, tmp_path):
    """The reproduction: the input's weights are raw.onnx.data and the output is raw.onnx beside it."""
    onnx.save_model(build("legacy"), str(tmp_path / "in.onnx"), save_as_external_data=True,
                    location="raw.onnx.data", size_threshold=0)
    msg = refused(tmp_path, "strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx", *(["--force"] * force),
                  says="the output is the external data file of")
    assert "raw.onnx.data" in msg
    assert len(onnx.load(str(tmp_path / "in.onnx")).graph.initializer) > 10  # the input still loads


@pytest.mark.parametrize("large", [False, True])
def test_the_check_does_not_depend_on_the_outputs_size(large, tmp_path, monkeypatch):
    """Library level: whether the raw model would go to raw.onnx.data or not, the input's data is refused."""
    if large:
        monkeypatch.setattr(io_mod, "_EXTERNAL_THRESHOLD", 0)
    onnx.save_model(build("legacy"), str(tmp_path / "in.onnx"), save_as_external_data=True,
                    location="raw.onnx.data", size_threshold=0)
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="raw.onnx.data: the output is the external data file of"):
        strip(tmp_path / "in.onnx", tmp_path / "raw.onnx", force=True)
    assert snapshot(tmp_path) == before


def test_a_data_file_in_the_current_folder_is_not_the_outputs(tmp_path, model, monkeypatch):
    """onnx refuses a location that exists relative to the *current* folder; headcut writes beside the output."""
    monkeypatch.setattr(io_mod, "_EXTERNAL_THRESHOLD", 0)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "raw.onnx.data").write_bytes(b"the user's file")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    res = strip(model, tmp_path / "out" / "raw.onnx")
    assert res.verification.ok
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["raw.head.json", "raw.onnx", "raw.onnx.data"]
    assert (tmp_path / "cwd" / "raw.onnx.data").read_bytes() == b"the user's file"


def test_external_data_in_a_subfolder_is_found(tmp_path):
    (tmp_path / "w").mkdir()
    onnx.save_model(build("legacy"), str(tmp_path / "in.onnx"), save_as_external_data=True,
                    location="w/out.onnx.data", size_threshold=0)
    refused(tmp_path, "strip", tmp_path / "in.onnx", "-o", tmp_path / "w" / "out.onnx", "--force",
            says="the output is the external data file of")


def test_a_hard_link_to_the_input_counts_as_the_input(tmp_path, model):
    os.link(model, tmp_path / "raw.onnx")
    refused(tmp_path, "strip", model, "-o", tmp_path / "raw.onnx", "--force", says="the output is the input file")


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_an_input_named_like_the_sidecar_is_never_replaced(fmt, tmp_path):
    onnx.save_model(build("legacy"), str(tmp_path / "out.head.json"), format=fmt)
    msg = refused(tmp_path, "strip", tmp_path / "out.head.json", "-o", tmp_path / "out.onnx", "--force",
                  says="the output is the input file")
    assert "out.head.json" in msg


@pytest.mark.parametrize("force", [False, True])
def test_detect_never_draws_over_its_input_image(force, tmp_path, model, photo):
    refused(tmp_path, "detect", model, photo, "-o", photo, *(["--force"] * force), says="the output is the input image")


def test_strip_never_writes_over_an_image_it_verifies_on(tmp_path, model):
    shutil.copy(PHOTO, tmp_path / "raw.head.json")  # a JPEG under the sidecar's name, given as --image
    refused(tmp_path, "strip", model, "-o", tmp_path / "raw.onnx", "--image", tmp_path / "raw.head.json", "--force",
            says="raw.head.json: the output is an --image input")


def test_detect_never_draws_over_the_names_file(tmp_path, model, photo):
    names = tmp_path / "names.png"  # a names file with an image's name: still an input
    names.write_text("\n".join(f"c{i}" for i in range(80)) + "\n")
    refused(tmp_path, "detect", model, photo, "--names", names, "-o", names, "--force",
            says="the output is the class names file")


# -- 3. symbolic links are refused, whatever they point at -------------------------------------------


@pytest.mark.parametrize("member", ["raw.onnx", "raw.head.json", "raw.onnx.data"])
def test_strip_does_not_write_through_a_link(member, tmp_path, model):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "target").write_bytes(b"a file the link points at")
    (tmp_path / member).symlink_to(elsewhere / "target")
    msg = refused(tmp_path, "strip", model, "-o", tmp_path / "raw.onnx", "--force",
                  says="is a symbolic link; headcut does not write through links")
    assert member in msg


def test_a_dangling_link_is_refused_too(tmp_path, model):
    (tmp_path / "raw.onnx").symlink_to(tmp_path / "nowhere" / "raw.onnx")
    refused(tmp_path, "strip", model, "-o", tmp_path / "raw.onnx", says="is a symbolic link")


def test_detect_does_not_write_through_a_link(tmp_path, model, photo):
    (tmp_path / "boxes.png").symlink_to(tmp_path / "in.onnx")
    refused(tmp_path, "detect", model, photo, "-o", tmp_path / "boxes.png", "--force",
            says="the output is the input file")
    (tmp_path / "boxes.png").unlink()
    (tmp_path / "other.png").write_bytes(b"x")
    (tmp_path / "boxes.png").symlink_to(tmp_path / "other.png")
    refused(tmp_path, "detect", model, photo, "-o", tmp_path / "boxes.png", "--force", says="is a symbolic link")


def test_a_linked_output_folder_is_a_folder_not_a_link(tmp_path, model):
    """Only the file name itself is refused as a link; a folder reached through one is where the user asked."""
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    code, _, err = headcut("strip", model, "-o", tmp_path / "via" / "raw.onnx", "--no-verify")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["raw.head.json", "raw.onnx"]


# -- 4. an output that is a folder ---------------------------------------------------------------------


@pytest.mark.parametrize("member", ["d.onnx", "d.head.json"])
def test_a_folder_in_the_output_set_is_refused_with_force(member, tmp_path, model):
    (tmp_path / member).mkdir()
    msg = refused(tmp_path, "strip", model, "-o", tmp_path / "d.onnx", "--force", says="is a folder")
    assert member in msg


# -- 5. the set is committed as a unit, under a lock -----------------------------------------------


def test_a_held_lock_is_a_clear_error(tmp_path, model):
    out = tmp_path / "out"
    out.mkdir()
    with staging.locked([out / "raw.head.json"], out / "raw.onnx"):
        before = snapshot(tmp_path)
        code, _, err = headcut("strip", model, "-o", out / "raw.onnx")
        assert code == 2 and err.strip() == (f"headcut: error: another headcut is writing {out / 'raw.onnx'}; "
                                             "try again when it has finished"), err
        assert snapshot(tmp_path) == before  # the lock file is the only thing there: nothing staged is left
    assert list(out.iterdir()) == []  # and it goes with the lock


def test_a_lock_file_left_by_a_killed_headcut_does_not_block(tmp_path, model):
    """The lock is a flock: the kernel drops it with its process, so a leftover file is free to take;
    headcut locks it as it is and leaves it (it removes only lock files it made itself)."""
    leftover = staging.lock_path(tmp_path / "raw.onnx")
    leftover.write_text("12345\n")
    code, _, err = headcut("strip", model, "-o", tmp_path / "raw.onnx", "--no-verify")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".raw.onnx.headcut-lock", "in.onnx", "raw.head.json",
                                                          "raw.onnx"]
    assert leftover.read_text() == "12345\n"


def test_two_concurrent_strips_leave_one_consistent_set(tmp_path, model):
    """Both run at once; with --force each commit is whole, so the sidecar always matches the model."""
    out = tmp_path / "raw.onnx"
    procs = [subprocess.Popen([sys.executable, "-m", "onnx_headcut", "strip", str(model), "-o", str(out), "--force",
                               "--layout", layout], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for layout in ("flat", "levels")]
    results = [(p.communicate(timeout=120)[1], p.returncode)[::-1] for p in procs]
    for code, err in results:
        assert code == 0 or (code == 2 and "another headcut is writing" in err), err
    assert any(code == 0 for code, _ in results)
    assert json.loads((tmp_path / "raw.head.json").read_text()) == read_metadata(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "raw.head.json", "raw.onnx"]

    # without --force exactly one of two may write the (now new) output
    for f in ("raw.onnx", "raw.head.json"):
        (tmp_path / f).unlink()
    procs = [subprocess.Popen([sys.executable, "-m", "onnx_headcut", "strip", str(model), "-o", str(out),
                               "--layout", layout], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for layout in ("flat", "levels")]
    results = [(p.communicate(timeout=120)[1], p.returncode)[::-1] for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "already exists" in loser or "another headcut is writing" in loser, loser
    assert json.loads((tmp_path / "raw.head.json").read_text()) == read_metadata(out)


def test_commit_rechecks_a_target_that_appeared_meanwhile(tmp_path):
    dst = tmp_path / "a.onnx"
    targets = [dst, tmp_path / "a.head.json"]
    with staging.Staging(dst, targets=targets) as st:
        st.path("a.onnx").write_bytes(b"new model")
        st.path("a.head.json").write_text("{}")
        (tmp_path / "a.head.json").write_text("written by someone else meanwhile")
        with pytest.raises(OutputError, match="a.head.json: already exists"):
            st.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.head.json"]
    assert (tmp_path / "a.head.json").read_text() == "written by someone else meanwhile"


def test_a_failed_move_undoes_the_commit(tmp_path, monkeypatch):
    dst = tmp_path / "a.onnx"
    (tmp_path / "a.onnx").write_bytes(b"old model")
    calls = []

    def failing(src, final, force):
        calls.append(final.name)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(src, final, force)

    real = staging._place
    monkeypatch.setattr(staging, "_place", failing)
    with staging.Staging(dst, targets=[dst, tmp_path / "a.head.json"], force=True) as st:
        st.path("a.onnx").write_bytes(b"new model")
        st.path("a.head.json").write_text("{}")
        with pytest.raises(OutputError, match="cannot be moved into place .*nothing written"):
            st.commit()
    assert calls == ["a.onnx", "a.head.json"]  # a.onnx was replaced, then restored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]
    assert (tmp_path / "a.onnx").read_bytes() == b"old model"


# -- 6. the metadata embedded in an .onnx wins over the sidecar ------------------------------------


@pytest.fixture
def raw(tmp_path, model) -> Path:
    strip(model, tmp_path / "raw.onnx", verify=False)
    return tmp_path / "raw.onnx"


def test_a_sidecar_that_disagrees_with_the_embedded_metadata_is_an_error(tmp_path, model, raw, photo):
    side = tmp_path / "raw.head.json"
    head = json.loads(side.read_text())
    head["levels"][0]["stride"] *= 2
    side.write_text(json.dumps(head))
    for args in (("detect", raw, photo), ("verify", model, raw)):
        refused(tmp_path, *args, says=f"raw.head.json: disagrees with the head metadata embedded in {raw}")


def test_the_embedded_metadata_alone_is_enough(tmp_path, model, raw, photo):
    (tmp_path / "raw.head.json").unlink()
    code, out, err = headcut("detect", raw, photo, "--json")
    assert code == 0, err
    assert json.loads(out)["kind"] == "raw"


def test_a_sidecar_beside_a_decoded_model_does_not_make_it_raw(tmp_path, model, raw, photo):
    shutil.copy(tmp_path / "raw.head.json", tmp_path / "in.head.json")  # a stale sidecar beside the original
    refused(tmp_path, "detect", model, photo, says=f"in.head.json: lies beside {model}, which has no headcut metadata")


def test_head_for_reads_the_sidecar_of_an_engine_file(tmp_path, raw):
    from onnx_headcut.metadata import head_for

    (tmp_path / "raw.param").write_text("7767517\n")
    assert head_for(tmp_path / "raw.param") == read_metadata(raw)
    (tmp_path / "raw.head.json").write_text("[not an object")
    with pytest.raises(InputError, match="raw.head.json: malformed headcut metadata: not JSON"):
        head_for(tmp_path / "raw.param")


# -- 8. a full disk ----------------------------------------------------------------------------------


def test_disk_full_while_staging_is_one_line_and_leaves_nothing(tmp_path, model, monkeypatch):
    import onnx_headcut.pipeline as strip_mod

    def full(m, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(strip_mod, "save", full)
    with pytest.raises(OutputError) as e:
        strip(model, tmp_path / "raw.onnx")
    assert str(e.value) == f"{tmp_path / 'raw.onnx'}: No space left on device while writing it; nothing written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped elsewhere)."""
    d = tmp_path / "tiny"
    d.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_disk_full_on_a_real_file_system(tmp_path, model, photo, tiny_disk):
    (tiny_disk / "keep.txt").write_text("the user's file\n")
    refused(tmp_path, "strip", model, "-o", tiny_disk / "raw.onnx",
            says=f"{tiny_disk / 'raw.onnx'}: No space left on device while writing it; nothing written")
    refused(tmp_path, "detect", model, photo, "-o", tiny_disk / "boxes.png",
            says=f"{tiny_disk / 'boxes.png'}: No space left on device while writing it; nothing written")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["keep.txt"]


def test_a_user_file_named_like_a_lock_file_is_never_touched(tmp_path):
    """The lock guarding OUT is .OUT.headcut-lock beside it: an input or any other file of that name
    is refused (before any work), never taken over, written or removed."""
    src = tmp_path / ".raw.onnx.headcut-lock"
    onnx.save(build("legacy"), str(src))
    notes = tmp_path / ".raw.head.json.headcut-lock"
    notes.write_text("my notes\n")
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", "strip", str(src), "-o", str(tmp_path / "raw.onnx")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "is not a headcut lock file" in p.stderr, p.stderr
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before
    notes.unlink()
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", "strip", str(src), "-o", str(tmp_path / "raw.onnx")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and ".raw.onnx.headcut-lock: exists and is not a headcut lock file" in p.stderr
    assert digest(src) == before[src.name]


def test_an_interrupt_before_the_with_block_leaves_no_staging_folder(tmp_path):
    """A SIGTERM landing after the staging folder was made but before the ``with`` block took charge of it left
    ``.headcut-*`` behind (test_cli's interrupt test caught it under load); the CLI now removes what is left."""
    import typer

    from onnx_headcut.cli import _run

    out = tmp_path / "new" / "out"

    def interrupted():
        staging.Staging(out / "raw.onnx")  # made, never entered
        assert [p.name[:9] for p in out.iterdir()] == [".headcut-"]
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as e:
        _run(interrupted)
    assert e.value.exit_code == 130
    assert list(tmp_path.iterdir()) == []  # the staging folder and the folders made for it are gone
