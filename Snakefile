# repel: push a trained network away from its own checkpoints, and measure what that does.
#
# data -> base training -> distance-regularized continuation -> landscape, ensembles
#   -> aggregate -> plots.
# Run:  snakemake --cores all            (the embedded default in config/config.yaml)
#       snakemake --cores all --configfile config/other.yaml
# Every stage is a rule calling `python -m repel <stage>`; see README.md.

import re

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a config is given with --configfile: merging the two would mix
# their grids (a default `width` beside a study's `gamma`).
if not workflow.overwrite_configfiles:
    try:  # snakemake's own message for a YAML syntax error names neither the file nor the line
        with open("config/config.yaml") as f:
            yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise WorkflowError(f"config/config.yaml is not valid YAML: {error}") from None
    except OSError:
        pass  # no such file: the configfile line below says so

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    seed=r"\d+",
    run="|".join(map(re.escape, RUNS)),
    method="|".join(map(re.escape, ENSEMBLE_PLAN or grid.ENSEMBLE_METHODS)),  # distance_s10, ... per strength
    ensemble=r"seeds?[0-9-]+",
    family="|".join(FAMILIES),


# Short jobs run where snakemake runs (on a cluster: the login node, which also has the network
# that dataset downloads need) instead of each waiting in the queue.
localrules:
    all,
    prepare_data,
    init_base,
    aggregate,
    aggregate_landscape,
    evaluate_ensembles,
    claims,
    plot_claims,
    plot_family,
    plot_landscape,
    plot_ensembles,
    plot_kernels,
    plot_hill_2d,
    shift_table,
    ood_table,
    plot_shift,


include: "workflow/rules/data.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/continue.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/ensembles.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
