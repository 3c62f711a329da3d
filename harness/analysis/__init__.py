"""Pure analysis of observations against expectations: truth tables (``truthtable``) and, in
sibling modules, lag, windows and race classification. Nothing here touches the kernel."""
