rule continue_run:
    input:
        data="results/data/{dataset}.pt",
        checkpoint="results/base/{dataset}/{model}/seed{seed}/checkpoint.pt",
    output:
        metrics="results/continue/{dataset}/{model}/{run}/seed{seed}/metrics.parquet",
        weights="results/continue/{dataset}/{model}/{run}/seed{seed}/final.pt",
    log:
        "results/logs/continue_run/{dataset}/{model}/{run}/seed{seed}.log",
    params:
        args=get_run_args,
        device=config["device"],
        save_every=config["save_every"],
        snapshot_every=get_snapshot_every,
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel continue --data {input.data} --checkpoint {input.checkpoint} "
        "--run {wildcards.run} {params.args} --snapshot-every {params.snapshot_every} --device {params.device} --save-every {params.save_every} "
        "--threads {threads} --out-dir {params.out_dir} > {log} 2>&1"
