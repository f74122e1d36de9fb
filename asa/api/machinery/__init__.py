"""The run machinery the console-script jobs share: a training run's folder, lock and checks (`run`), the one
order of a training job (`job`) and of a prediction (`prediction`), the pretraining job (`pretraining`), the
optimiser and geometry of a run (`training`), its network (`networks`) and the pretraining-cohort checks
(`cohort`). It never imports a job of `asa.api` (the console-script doors above it)."""
