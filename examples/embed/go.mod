module github.com/wsloop/wsloop/examples/embed

go 1.26.0

require github.com/wsloop/wsloop v0.0.0

replace github.com/wsloop/wsloop => ../..
