module cardcallback

go 1.24
