"""Running on Airflow: the task bodies the DAG file wires (`tasks`), planning a run into shards
of units (`planning`), handing data between tasks (`staging`), and Airflow's environment
(`airflow_env`: `etl airflow`, the running processes `etl check` compares with)."""
