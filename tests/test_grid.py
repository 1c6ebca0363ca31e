import json

import pytest

from repel import grid

DEFAULTS = {"epochs": 30, "lr": 0.01, "schedule": "constant", "kernel": "rbf", "width": 1.0, "distance": "sum"}


def points(*pts: dict) -> dict:
    """A continuation block with one family of explicit points."""
    return {"defaults": DEFAULTS, "families": {"f": {"points": list(pts)}}}


def test_every_point_brings_its_control():
    runs = grid.expand(points({"strength": 1}, {"strength": 1, "lr": 0.1}), seeds=[0, 1])
    assert set(runs) == {
        "s1-rbf-w1_lr0.01-const-e30",
        "s0_lr0.01-const-e30",
        "s1-rbf-w1_lr0.1-const-e30",
        "s0_lr0.1-const-e30",
    }
    assert runs["s1-rbf-w1_lr0.1-const-e30"]["spec"].control().id == "s0_lr0.1-const-e30"
    assert runs["s0_lr0.01-const-e30"]["labels"] == ["control"]
    assert all(run["seeds"] == [0, 1] for run in runs.values())
    # a family of explicit points varies the keys its points set, each once
    assert grid.families(points({"strength": 1}, {"strength": 1, "lr": 0.1}))["f"]["varying"] == ["strength", "lr"]


def test_gamma_replaces_the_default_width_and_ids_name_the_parameters():
    runs = grid.expand(
        points(
            {
                "strength": 10,
                "gamma": 1e-4,
                "kernel": "laplacian",
                "distance": "mean",
                "schedule": "cosine_restarts",
                "t0": 5,
                "t_mult": 2,
                "seeds": [3],
            },
        ),
        seeds=[0],
    )
    rid = "s10-laplacian-g0.0001-mean_lr0.01-sgdr5x2-e30"
    penalty = runs[rid]["spec"].penalty
    assert penalty.width is None and penalty.gamma == 1e-4
    assert runs[rid]["seeds"] == [3]
    # the job gets the spec as JSON: gamma, and no width
    sent = json.loads(runs[rid]["spec"].to_json())
    assert sent["gamma"] == 1e-4 and sent["width"] is None and sent["t0"] == 5 and sent["t_mult"] == 2


def test_an_explicit_zero_strength_is_the_shared_control():
    runs = grid.expand(points({"strength": 0, "width": 3}), seeds=[0])
    assert list(runs) == ["s0_lr0.01-const-e30"]
    assert runs["s0_lr0.01-const-e30"]["spec"].penalty.kernel == "none"


@pytest.mark.parametrize(
    "schedule, extra, part",
    [
        ("step", {"step_size": 10, "step_gamma": 0.5}, "step10x0.5"),
        ("cosine", {}, "cos"),
        ("cosine", {"eta_min": 1e-4}, "cosmin0.0001"),
    ],
)
def test_schedules_are_named_with_their_settings(schedule, extra, part):
    run = grid.resolve(DEFAULTS, {"strength": 1, "schedule": schedule, **extra}, "f")
    assert run.id == f"s1-rbf-w1_lr0.01-{part}-e30"


def test_repeated_and_merged_checkpoints_are_named_and_passed_on():
    runs = grid.expand(
        points(
            {"strength": 1, "checkpoint_every": 5},
            {"strength": 1, "checkpoint_every": 5, "merge": True},
        ),
        seeds=[0],
    )
    assert set(runs) == {
        "s1-rbf-w1-every5_lr0.01-const-e30",
        "s1-rbf-w1-every5-merged_lr0.01-const-e30",
        "s0_lr0.01-const-e30",
    }
    merged = json.loads(runs["s1-rbf-w1-every5-merged_lr0.01-const-e30"]["spec"].to_json())
    assert merged["checkpoint_every"] == 5 and merged["merge"] is True
    assert json.loads(runs["s1-rbf-w1-every5_lr0.01-const-e30"]["spec"].to_json())["merge"] is False
    # one checkpoint has nothing to merge: refused, not silently dropped
    with pytest.raises(ValueError, match="continuation.families.f: merge is true but checkpoint_every is 0"):
        grid.expand(points({"strength": 1, "merge": True}), seeds=[0])


ENSEMBLES = {
    "members": 3,
    "cycle": 4,
    "strength": 10,
    "width": 0.5,
    "lr": 0.05,
    "seeds": [0, 1, 2],
    "fge": {"cycle": 2, "lr_low": 0.001},
    "swa": {"lr": 0.01},
}


def test_every_ensemble_method_trains_the_same_epoch_budget():
    plan = grid.ensemble_plan(ENSEMBLES, DEFAULTS, seeds=[0, 1])
    runs = grid.expand(points({"strength": 1}), [0, 1], ENSEMBLES)
    assert set(plan) == set(grid.ENSEMBLE_METHODS)
    for method, ensembles in plan.items():
        for name, e in ensembles.items():
            assert runs[e["run"]]["spec"].training.epochs == 12, method  # 3 members x 4 epochs
            # trained for the members' seeds, but compared over none: no family asked for these runs
            assert set(e["seeds"]) <= set(runs[e["run"]]["member_seeds"]) and runs[e["run"]]["seeds"] == [], name
    assert plan["distance"]["seed0"]["run"] == "s10-rbf-w0.5-every4_lr0.05-const-e12"
    assert plan["sgdr"]["seed0"]["run"] == "s0_lr0.05-sgdr4x1-e12"
    assert plan["sgdr_distance"]["seed0"]["run"] == "s10-rbf-w0.5-every4_lr0.05-sgdr4x1-e12"
    assert plan["independent"]["seeds0-1-2"]["run"] == "s0_lr0.05-const-e12"
    # the matching control of distance: the same lr and member epochs, no penalty (the independent
    # seeds' run, whose snapshots it keeps)
    assert plan["snapshots"]["seed1"] == {"run": "s0_lr0.05-const-e12", "seeds": [1], "epochs": [4, 8, 12]}
    assert (
        runs[plan["snapshots"]["seed0"]["run"]]["spec"].training
        == runs[plan["distance"]["seed0"]["run"]]["spec"].training
    )
    assert plan["fge"]["seed1"] == {"run": "s0_lr0.05-cyc2min0.001-e12", "seeds": [1], "epochs": [2, 4, 6, 8, 10, 12]}
    assert plan["swa"]["seed1"] == {"run": "s0_lr0.05-swa0.01-e12", "seeds": [1], "epochs": [4, 8, 12]}
    assert runs[plan["fge"]["seed0"]["run"]]["spec"].training.schedule == "cyclic"
    # a snapshot method: one ensemble per seed of the study, each from that seed's run
    assert plan["distance"] == {
        f"seed{k}": {"run": "s10-rbf-w0.5-every4_lr0.05-const-e12", "seeds": [k], "epochs": [4, 8, 12]} for k in (0, 1)
    }
    # independent seeds: 3 seeds are fewer than two groups of 3 members, so one ensemble of them all
    assert plan["independent"] == {"seeds0-1-2": {"run": "s0_lr0.05-const-e12", "seeds": [0, 1, 2], "epochs": None}}


def test_fge_and_swa_run_only_where_the_block_has_their_settings():
    plain = {k: v for k, v in ENSEMBLES.items() if k not in ("fge", "swa")}
    assert set(grid.ensemble_plan(plain, DEFAULTS, seeds=[0])) == {
        "distance",
        "snapshots",
        "sgdr",
        "sgdr_distance",
        "independent",
    }


def test_a_list_of_strengths_makes_a_distance_method_per_strength():
    several = {**ENSEMBLES, "strength": [1, 10, 0.5]}
    plan = grid.ensemble_plan(several, DEFAULTS, seeds=[0, 1])
    # the names written out by hand: each penalized kind with its strength; the rest as before
    penalized = {"distance_s1", "distance_s10", "distance_s0.5", "sgdr_distance_s1", "sgdr_distance_s10"}
    penalized.add("sgdr_distance_s0.5")
    assert set(plan) == penalized | (set(grid.ENSEMBLE_METHODS) - {"distance", "sgdr_distance"})
    runs = grid.expand(points({"strength": 1}), [0, 1], several)
    for s in (1, 10, 0.5):
        for kind, schedule in (("distance", "constant"), ("sgdr_distance", "cosine_restarts")):
            spec = runs[plan[f"{kind}_s{s:g}"]["seed0"]["run"]]["spec"]
            assert spec.penalty.strength == s and spec.training.schedule == schedule
            assert grid.method_strength(f"{kind}_s{s:g}") == (kind, s)
            # the same training as the matching control (or SGDR), one strength apart
            other = plan["snapshots" if kind == "distance" else "sgdr"]["seed0"]["run"]
            assert spec.training == runs[other]["spec"].training
    assert plan["distance_s10"] == {
        f"seed{k}": {"run": "s10-rbf-w0.5-every4_lr0.05-const-e12", "seeds": [k], "epochs": [4, 8, 12]} for k in (0, 1)
    }
    # one strength, as a number or a one-item list: the plain names, the same runs
    single = grid.ensemble_plan({**ENSEMBLES, "strength": [10]}, DEFAULTS, seeds=[0, 1])
    assert single == grid.ensemble_plan(ENSEMBLES, DEFAULTS, seeds=[0, 1])
    assert grid.method_strength("distance") == ("distance", None) and grid.method_strength("snapshots") is None


def test_independent_seeds_form_one_ensemble_per_disjoint_group_of_m():
    assert grid.independent_groups([0, 1, 2, 3, 4, 5, 6, 7], 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert grid.independent_groups([0, 1, 2, 3, 4, 5, 6], 3) == [[0, 1, 2], [3, 4, 5]]  # 6 is left over
    assert grid.independent_groups([0, 1, 2, 3, 4, 5], 4) == [[0, 1, 2, 3, 4, 5]]  # not two groups: one


def test_a_control_shared_with_the_independent_ensemble_keeps_only_the_configs_seeds():
    # the independent-seeds ensemble trains the default control for seeds 0-3; the family asked for
    # seed 0 only, so the control is compared over seed 0 and seeds 1-3 are the ensemble's
    ens = {"members": 2, "cycle": 15, "strength": 10, "lr": 0.01, "seeds": [0, 1, 2, 3]}
    runs = grid.expand(points({"strength": 1}), [0], ens)
    control = runs["s0_lr0.01-const-e30"]
    assert control["seeds"] == [0] and control["member_seeds"] == [0, 1, 2, 3]
    assert grid.training_seeds(control) == [0, 1, 2, 3]


def test_a_sweep_expands_into_every_combination_over_the_fixed_settings():
    family = {"fixed": {"width": 0.5}, "sweep": {"lr": [0.001, 0.1], "strength": [0, 10]}}
    cont = {"defaults": DEFAULTS, "families": {"lr": family}}
    runs = grid.expand(cont, seeds=[0])
    assert set(runs) == {
        "s0_lr0.001-const-e30",
        "s10-rbf-w0.5_lr0.001-const-e30",
        "s0_lr0.1-const-e30",
        "s10-rbf-w0.5_lr0.1-const-e30",
    }
    assert runs["s10-rbf-w0.5_lr0.1-const-e30"]["labels"] == ["lr"]
    assert runs["s0_lr0.1-const-e30"]["labels"] == ["control"]  # an s = 0 point is its own control
    spec = grid.families(cont)["lr"]
    assert sorted(spec["runs"]) == sorted(runs) and spec["varying"] == ["lr", "strength"]
    assert spec["x"] == "lr" and spec["figure"] == "curves" and spec["panels"] == ["val_acc", "dist"]


def test_families_share_their_common_points_and_label_them_with_each_family():
    cont = {
        "defaults": {**DEFAULTS, "strength": 10},
        "families": {
            "baseline": {"sweep": {"strength": [10]}},
            "width": {"sweep": {"width": [0.5, 1.0]}},
            "kernel": {"sweep": {"kernel": ["rbf", "imq"]}},
        },
    }
    runs = grid.expand(cont, seeds=[0])
    assert set(runs) == {
        "s0_lr0.01-const-e30",
        "s10-rbf-w1_lr0.01-const-e30",
        "s10-rbf-w0.5_lr0.01-const-e30",
        "s10-imq-w1_lr0.01-const-e30",
    }
    assert runs["s10-rbf-w1_lr0.01-const-e30"]["labels"] == ["baseline", "width", "kernel"]
    assert grid.families(cont)["width"]["runs"] == [
        "s0_lr0.01-const-e30",
        "s10-rbf-w0.5_lr0.01-const-e30",
        "s10-rbf-w1_lr0.01-const-e30",
    ]


def test_a_point_without_strength_is_an_error_that_names_the_family():
    with pytest.raises(ValueError, match="continuation.families.width: a grid point has no strength"):
        grid.expand({"defaults": DEFAULTS, "families": {"width": {"sweep": {"width": [1.0]}}}}, seeds=[0])


def test_runs_of_one_seed_that_share_their_training_are_packed_by_hand():
    cont = {
        "defaults": {**DEFAULTS, "seeds": [0, 1]},
        "families": {
            "strength": {"sweep": {"strength": [1, 10, 100]}},  # 3 points and their control: lr 0.01
            "lr": {"sweep": {"lr": [0.1]}, "fixed": {"seeds": [0], "strength": 10}},  # and its control: lr 0.1, seed 0
        },
    }
    runs = grid.expand(cont, [0, 1], {"members": 2, "cycle": 15, "strength": 10, "seeds": [0, 1], "swa": {"lr": 0.005}})
    packs = grid.packs(runs, 8)
    const = [
        "s0_lr0.01-const-e30",
        "s1-rbf-w1_lr0.01-const-e30",
        "s10-rbf-w1-every15_lr0.01-const-e30",
        "s10-rbf-w1_lr0.01-const-e30",
        "s100-rbf-w1_lr0.01-const-e30",
    ]  # distance snapshots included
    assert packs["lr0.01-const-e30_seed0"] == {"runs": const, "seed": 0}
    assert packs["lr0.01-const-e30_seed1"] == {"runs": const, "seed": 1}
    assert packs["lr0.1-const-e30_seed0"] == {"runs": ["s0_lr0.1-const-e30", "s10-rbf-w1_lr0.1-const-e30"], "seed": 0}
    # SGDR and SGDR + distance share their training; SWA trains alone
    assert packs["lr0.01-sgdr15x1-e30_seed1"]["runs"] == [
        "s0_lr0.01-sgdr15x1-e30",
        "s10-rbf-w1-every15_lr0.01-sgdr15x1-e30",
    ]
    assert not any("swa" in name for name in packs) and len(packs) == 3 + 2
    # at most 2 a pack: the 5 runs split by their hashes into parts of at most 2, each part of two a pack
    small = [pack["runs"] for name, pack in grid.packs(runs, 2).items() if name.startswith("lr0.01-const-e30_seed0")]
    packed = [rid for part in small for rid in part]
    assert all(len(part) == 2 for part in small) and len(packed) == len(set(packed)) and set(packed) <= set(const)
    assert grid.packs(runs, grid.pack_size("off")) == {} and grid.pack_size("auto") == grid.AUTO_PACK


def _packs_of_widths(widths: list[float], max_members: int) -> set[frozenset]:
    """The jobs of one training group, a run for each width, seed 0: its packs and its runs alone."""
    specs = [grid.resolve(DEFAULTS, {"width": w, "strength": 10}, "test") for w in widths]
    runs = {spec.id: {"spec": spec, "seeds": [0], "member_seeds": []} for spec in specs}
    packs = {frozenset(pack["runs"]) for pack in grid.packs(runs, max_members).values()}
    return packs | {frozenset([rid]) for rid in runs if not any(rid in pack for pack in packs)}


@pytest.mark.parametrize("max_members", [2, 3, 8])
def test_adding_a_point_changes_only_the_pack_it_joins(max_members):
    """For groups of 1..24 runs and one run added to each: at most one job of the group (a pack or a run
    alone) is gone, and every new one lies within it and the new run (the property, without the hash)."""
    widths = [round(0.1 * k, 1) for k in range(1, 26)]
    for n in range(1, 25):
        before, after = _packs_of_widths(widths[:n], max_members), _packs_of_widths(widths[: n + 1], max_members)
        new_id = grid.resolve(DEFAULTS, {"width": widths[n], "strength": 10}, "test").id
        gone, came = before - after, after - before
        assert len(gone) <= 1, (n, gone)
        assert all(pack <= set().union(*gone) | {new_id} for pack in came), (n, came, gone)
        assert all(len(pack) <= max_members for pack in after)
    # and the packs do batch: 24 runs, at most 8 a pack, in at most 6 jobs
    assert len(_packs_of_widths(widths[:24], 8)) <= 6
