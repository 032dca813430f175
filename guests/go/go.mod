module herdbench/guests/go

go 1.19
