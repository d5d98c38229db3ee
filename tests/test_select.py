"""``python -m brats_lib select``: settings chosen on cases no report scores."""
import numpy as np
import pandas as pd
import pytest

from brats_lib.app import cli
from brats_lib.app import profiles
from brats_lib.app import select as SEL


@pytest.fixture(scope="module")
def cp():
    return profiles.load("comparison", "test")  # 4 phantoms of 32^3, 2 folds, fold 0 scored


@pytest.mark.parametrize("spec, message", [
    ("fold:0", "the comparison scores folds 0-0"),
    ("fold:2", "has folds 0-1"),
    ("phantoms:0", "seed 0 makes the comparison's own phantoms"),
    ("fold1", "expected fold:K or phantoms:SEED"),
    ("cases:3", "expected fold:K or phantoms:SEED"),
])
def test_selection_sets_refuse_scored_or_unknown_sets(cp, spec, message):
    with pytest.raises(ValueError, match=message):
        SEL.selection_sets(cp, [spec])


def test_selection_sets_unscored_fold_and_fresh_phantoms(cp):
    fold, fresh = SEL.selection_sets(cp, ["fold:1", "phantoms:7"], phantoms=4)
    scored = set(SEL.read_splits(SEL.splits_path(cp.splits))[0]["val"])
    assert fold.name == "fold 1" and fold.fold == 1
    assert {c.case_id for c in fold.val}.isdisjoint({c.case_id for c in fold.train})
    assert {c.case_id for c in fold.val}.isdisjoint(scored)  # fold 1 validates on fold 0's training cases
    assert fresh.name == "phantoms 7" and len(fresh.train) == len(fresh.val) == 2
    own = SEL.D.load_case(SEL.D.open_source(None, 4, cp.seed, cp.phantom_shape)[0][0])
    assert not np.array_equal(fresh.train[0].image, own.image)  # another seed, other cases
    assert SEL.default_specs(cp) == ["fold:1", "phantoms:101"]


def test_parse_setting_reads_yaml_values():
    assert SEL.parse_setting(["cmff_epochs=20", "stage_epochs=[3, 3, 30]", "tta=1", "lr=0.006"]) == {
        "cmff_epochs": 20, "stage_epochs": [3, 3, 30], "tta": 1, "lr": 0.006}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        SEL.parse_setting(["epochs"])


def _frame():
    rng = np.random.default_rng(3)
    units = [(s, seed, c) for s, cases in (("fold 1", ["a", "b", "c"]), ("phantoms 101", ["d", "e"]))
             for seed in (0, 1) for c in cases]
    bases = {u: rng.uniform(0.3, 0.8, 3) for u in units}
    rows = []
    for setting, shift in (("profile", 0.0), ("try", 0.1)):
        for s, seed, c in units:
            noise = rng.normal(0, 0.05) if setting == "try" else 0.0  # TC alone differs at random
            base = bases[s, seed, c] + np.array([0.0, noise, 0.0])
            rows.append({"setting": setting, "set": s, "seed": seed, "case": c,
                         "Dice WT": base[0] + shift, "Dice TC": base[1], "Dice ET": base[2] - shift})
    return pd.DataFrame(rows)


def test_summary_is_the_mean_of_set_means():
    d = _frame()
    s = SEL.summary(d).set_index(["setting", "set"])
    fold = d[(d.setting == "try") & (d.set == "fold 1")]["Dice TC"].to_numpy()
    ph = d[(d.setting == "try") & (d.set == "phantoms 101")]["Dice TC"].to_numpy()
    assert s.loc[("try", "fold 1"), "Dice TC"] == pytest.approx(fold.sum() / 6)
    assert s.loc[("try", "mean of sets"), "Dice TC"] == pytest.approx((fold.mean() + ph.mean()) / 2)
    assert s.loc[("try", "mean of sets"), "Dice TC"] != pytest.approx(np.concatenate([fold, ph]).mean())


def test_paired_difference_matches_units():
    d = _frame()
    # the candidate lacks one unit: the pairs are the 9 it shares with the baseline, by (set, seed, case)
    d = d.drop(d[(d.setting == "try") & (d.case == "e") & (d.seed == 1)].index)
    shuffled = d.sample(frac=1.0, random_state=0)
    out = SEL.paired_difference(shuffled, "try", "profile").set_index("region")
    assert (out["n"] == 9).all()
    assert out.loc["WT", "difference"] == pytest.approx(0.1) and out.loc["ET", "difference"] == pytest.approx(-0.1)
    assert out.loc["WT", "95% CI low"] == pytest.approx(0.1) and out.loc["TC", "difference"] != pytest.approx(0.0)
    assert out.loc["WT", "p (Wilcoxon)"] < 0.01
    with pytest.raises(ValueError, match="share no"):
        SEL.paired_difference(d, "try", "nothing")


@pytest.mark.slow
def test_select_command_trains_on_selection_sets_only(tmp_path, capsys):
    out = tmp_path / "scores.csv"
    rc = cli.main(["select", "3D U-Net", "--profile", "test", "--set", "fold:1", "--set", "phantoms:7",
                   "--phantoms", "4", "--try", "epochs=2", "--seeds", "0", "1", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0 and "mean of sets" in printed and "epochs=2 minus the profile" in printed
    d = pd.read_csv(out)
    assert len(d) == 2 * 2 * 2 * 2  # settings x sets x seeds x validation cases
    assert set(d.setting) == {"profile", "epochs=2"} and set(d["set"]) == {"fold 1", "phantoms 7"}
    scored = set(SEL.read_splits(SEL.splits_path(profiles.load("comparison", "test").splits))[0]["val"])
    assert scored.isdisjoint(d.loc[d["set"] == "fold 1", "case"])
    # the same setting and seed trains the same model: the baseline is reproduced by a second call
    again = tmp_path / "again.csv"
    cli.main(["select", "3D U-Net", "--profile", "test", "--set", "fold:1", "--seeds", "1", "--out", str(again),
              "--quiet"])
    first = d[(d.setting == "profile") & (d["set"] == "fold 1") & (d.seed == 1)].reset_index(drop=True)
    assert np.allclose(pd.read_csv(again)["Dice WT"], first["Dice WT"])


def test_select_command_rejects_an_unknown_method(capsys):
    assert cli.main(["select", "nnU-Net", "--profile", "test"]) == 2
    assert "unknown method 'nnU-Net'" in capsys.readouterr().err


def test_each_selection_call_trains_in_a_folder_of_its_own_and_leaves_nothing(cp, tmp_path, monkeypatch):
    """Two selections at once must not share a training folder (fit resumes from any
    last.pt it finds there), and an error must not leave checkpoints behind."""
    fold, = SEL.selection_sets(cp, ["fold:1"])
    seen = []

    class Fitted:
        train_seconds = 0.0

        def predict(self, lc, tta):
            return lc.label

    def fake_train(m, k, train, p, out_dir, fraction, seed, device=None):
        out_dir.mkdir(parents=True)
        (out_dir / "last.pt").write_text("checkpoint")
        seen.append(out_dir)
        if len(seen) == 3:
            raise RuntimeError("interrupted")
        return Fitted()

    monkeypatch.setattr(SEL.C, "train", fake_train)
    here = dict(out_dir=tmp_path, log=None, workers=1)  # in this process, where train is replaced
    SEL.evaluate("3D U-Net", {"profile": {}}, [fold], cp, "test", seeds=[0], **here)
    SEL.evaluate("3D U-Net", {"profile": {}}, [fold], cp, "test", seeds=[0], **here)
    assert seen[0].parent != seen[1].parent and all(tmp_path in d.parents for d in seen)
    with pytest.raises(RuntimeError, match="interrupted"):
        SEL.evaluate("3D U-Net", {"profile": {}}, [fold], cp, "test", seeds=[0], **here)
    assert list(tmp_path.iterdir()) == []
