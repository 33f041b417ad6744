"""Evaluation: long-document QA and proxy-task runners, the full-context baseline, reports and plots."""
