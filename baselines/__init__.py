"""What "normal" is: per-release baselines, baseline selection and A/A calibration."""
