"""The LLM recommender: prompts, hosts (TALLRec, LLaRA/CoLLM, MSL), LoRA fine-tuning with
TCA4Rec soft labels, run folders and recommendation.

Heavy imports (transformers, peft) happen inside the submodules, so ``import tca4rec.llm``
stays cheap; import the submodules for the API:
``tca4rec.llm.train.train``, ``tca4rec.llm.run.load_llm_run``,
``tca4rec.llm.recommend.recommend``, ``tca4rec.llm.config.{HostConfig, TrainConfig}``,
``tca4rec.llm.hosts.Host``.
"""
