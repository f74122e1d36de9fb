"""The config language of the jobs: the typed configs (`schema`), a composed config checked and typed by them
(`checks`), and what earlier versions wrote, read by this one (`compat`). Below the run machinery and the tasks;
it imports no job."""
