"""Baselines for CoLoRA, by family, each fitted on the same observations and scored the same way.

Every method estimates the users' matrices ``W_i`` (d_out x d_in) from the same
``Observations``; they differ in what is shared and what is personal (LoRA's ``W = B A``:
``B`` output side, d_out x r; ``A`` input side, r x d_in). The methods, their models and
parameter counts are the table ``registry.METHODS``; the families are the modules here:

* ``colora``: the CoLoRA model itself, fitted by any registered algorithm;
* ``centered``: centred CoLoRA (``colora-centered``), its ridge chosen on held-out samples;
* ``local``: one model per user (its own LoRA, or its whole ``W_i`` by least squares);
* ``pooled``: one adapter for all users (``global``);
* ``one_sided``: one shared factor and a full personal other factor (FedRep, FedSA-LoRA, ALoRA);
* ``federated``: FedAvg of LoRA factors with local steps, then fine-tuning (FedAvg-LoRA, FFA-LoRA);
* ``references``: the oracle (the truth's ``U*``, ``V*`` given) and the frozen base.

References: FedRep, Collins et al., "Exploiting Shared Representations for Personalized
Federated Learning", ICML 2021; FedSA-LoRA, Guo et al., "Selective Aggregation for Low-Rank
Adaptation in Federated Learning", ICLR 2025; FFA-LoRA, Sun et al., "Improving LoRA in
Privacy-preserving Federated Learning", ICLR 2024; FedAvg, McMahan et al., AISTATS 2017.
"""
