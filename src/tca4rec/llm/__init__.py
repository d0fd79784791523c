"""The LLM recommender: prompts, hosts (TALLRec, LLaRA/CoLLM, MSL), LoRA fine-tuning with
TCA4Rec soft labels, run folders, evaluation with trie-constrained beam search, beta tuning
for CF-guided decoding, and recommendation.

``import tca4rec.llm`` loads nothing (``llm.config`` stays free of torch, so the command line
validates options at once); import the submodules for the API: ``tca4rec.llm.train.train``,
``tca4rec.llm.evaluate.evaluate_llm_run``, ``tca4rec.llm.tune_beta.tune_beta``,
``tca4rec.llm.recommend.recommend``, ``tca4rec.llm.run.load_llm_run``,
``tca4rec.llm.config.{HostConfig, TrainConfig}``.
"""
