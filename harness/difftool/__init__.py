"""`diffbench diff`: methods on two models of your own, with calibrated flags and steered evidence."""
