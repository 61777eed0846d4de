"""The two jobs a backend runs through the agent (ai-writeback, data-app), with what they need on the
backend host: a git server for the sample dbt project and the scripted model's replies for both."""
