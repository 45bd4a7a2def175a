"""The benchmark cases (a)-(g); each compares our figures with a baseline run back to back."""
