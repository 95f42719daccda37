"""`grantgate sidecar`: runs beside a training job and swaps its placeholder credentials for the pod's own."""
