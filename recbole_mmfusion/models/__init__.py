"""The plugin's recommenders, one model a module named after the class in lower case (RecBole's convention)."""
