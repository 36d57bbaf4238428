package wire

import (
	"errors"
	"reflect"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in   string
		want Command
		err  error
	}{
		{"HELO client.example", Command{"HELO", "client.example"}, nil},
		{"ehlo client.example", Command{"EHLO", "client.example"}, nil},
		{"MaIl FROM:<a@b>", Command{"MAIL", "FROM:<a@b>"}, nil},
		{"rcpt TO:<a@b> NOTIFY=NEVER", Command{"RCPT", "TO:<a@b> NOTIFY=NEVER"}, nil},
		{"DATA", Command{"DATA", ""}, nil},
		{"quit", Command{"QUIT", ""}, nil},
		{"StartTLS", Command{"STARTTLS", ""}, nil},
		{"QUIT ", Command{"QUIT", ""}, nil},
		{"EHLO  two-spaces", Command{"EHLO", " two-spaces"}, nil},
		{"xfoo bar", Command{"XFOO", "bar"}, nil},
		{"BDAT 100 LAST", Command{"BDAT", "100 LAST"}, nil},
		{"AUTH PLAIN AGFAAGI=", Command{"AUTH", "PLAIN AGFAAGI="}, nil},
		{"MAIL FROM:<jøran@bücher.example> SMTPUTF8", Command{"MAIL", "FROM:<jøran@bücher.example> SMTPUTF8"}, nil},
		{"", Command{}, ErrEmptyCommand},
		{"HELO a\x00b", Command{}, ErrBadCharacter},
		{"\x00", Command{}, ErrBadCharacter},
		{"HELO a\rMAIL FROM:<x>", Command{}, ErrBadCharacter},
		{"HELO a\nMAIL FROM:<x>", Command{}, ErrBadCharacter},
		{"HELO \xff\xfe", Command{}, ErrBadUTF8},
		{"HEL\xc3 a", Command{}, ErrBadUTF8},
		{"MAIL FROM:<a\xed\xa0\x80@b>", Command{}, ErrBadUTF8}, // a surrogate
	}
	for _, tt := range tests {
		got, err := ParseCommand([]byte(tt.in))
		if !errors.Is(err, tt.err) {
			t.Errorf("ParseCommand(%q) error = %v, want %v", tt.in, err, tt.err)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseCommand(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseCommandAllocs(t *testing.T) {
	line := []byte("noop")
	if n := testing.AllocsPerRun(100, func() { ParseCommand(line) }); n != 0 {
		t.Errorf("ParseCommand of a known verb allocates %v times", n)
	}
}

func TestParsePathArg(t *testing.T) {
	tests := []struct {
		arg, prefix string
		addr        smtp.Address
		params      []Param
		err         error
	}{
		{"FROM:<a@b.example> SIZE=10 BODY=8BITMIME", "FROM:", smtp.Address{Local: "a", Domain: "b.example"},
			[]Param{{Key: "SIZE", Value: "10"}, {Key: "BODY", Value: "8BITMIME"}}, nil},
		{"from: <a@b.example>", "FROM:", smtp.Address{Local: "a", Domain: "b.example"}, nil, nil},
		{"From:   <a@b.example>   size=10  ", "FROM:", smtp.Address{Local: "a", Domain: "b.example"},
			[]Param{{Key: "SIZE", Value: "10"}}, nil},
		{"FROM:<>", "FROM:", smtp.Address{}, nil, nil},
		{"FROM:<> RET=HDRS ENVID=QQ314159", "FROM:", smtp.Address{},
			[]Param{{Key: "RET", Value: "HDRS"}, {Key: "ENVID", Value: "QQ314159"}}, nil},
		{"FROM:a@b.example SMTPUTF8", "FROM:", smtp.Address{Local: "a", Domain: "b.example"},
			[]Param{{Key: "SMTPUTF8", Bare: true}}, nil},
		{"TO:<postmaster>", "TO:", smtp.Address{Local: "postmaster"}, nil, nil},
		{"TO:<jøran@bücher.example>", "TO:", smtp.Address{Local: "jøran", Domain: "bücher.example"}, nil, nil},
		{`TO:<"a b"@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+20b@x.example`, "TO:",
			smtp.Address{Local: "a b", Domain: "x.example"},
			[]Param{{Key: "NOTIFY", Value: "SUCCESS,FAILURE"}, {Key: "ORCPT", Value: "rfc822;a+20b@x.example"}}, nil},
		{"TO:<a@b.example>", "FROM:", smtp.Address{}, nil, smtp.ErrPathSyntax},
		{"FROM", "FROM:", smtp.Address{}, nil, smtp.ErrPathSyntax},
		{"FROM:", "FROM:", smtp.Address{}, nil, smtp.ErrPathSyntax},
		{"FROM:<a@b.example>SIZE=10", "FROM:", smtp.Address{}, nil, smtp.ErrPathSyntax},
		{"FROM:<a@b.example> SIZE=", "FROM:", smtp.Address{}, nil, ErrParamSyntax},
		{"FROM:<a@b.example> =10", "FROM:", smtp.Address{}, nil, ErrParamSyntax},
		{"FROM:<a@b.example> A=B=C", "FROM:", smtp.Address{}, nil, ErrParamSyntax},
		{"FROM:<" + string(make([]byte, 0)) + "a@b", "FROM:", smtp.Address{}, nil, smtp.ErrPathSyntax},
	}
	for _, tt := range tests {
		addr, params, err := ParsePathArg(tt.arg, tt.prefix)
		if !errors.Is(err, tt.err) {
			t.Errorf("ParsePathArg(%q) error = %v, want %v", tt.arg, err, tt.err)
			continue
		}
		if err == nil && (addr != tt.addr || !reflect.DeepEqual(params, tt.params)) {
			t.Errorf("ParsePathArg(%q) = %#v, %+v; want %#v, %+v", tt.arg, addr, params, tt.addr, tt.params)
		}
	}
}

func TestParseParams(t *testing.T) {
	tests := []struct {
		in   string
		want []Param
		bad  bool
	}{
		{"", nil, false},
		{"   ", nil, false},
		{"SIZE=10", []Param{{Key: "SIZE", Value: "10"}}, false},
		{"size=10 body=8bitmime", []Param{{Key: "SIZE", Value: "10"}, {Key: "BODY", Value: "8bitmime"}}, false},
		{"SMTPUTF8 REQUIRETLS", []Param{{Key: "SMTPUTF8", Bare: true}, {Key: "REQUIRETLS", Bare: true}}, false},
		{"X-FOO-1=a", []Param{{Key: "X-FOO-1", Value: "a"}}, false},
		{"AUTH=<>", []Param{{Key: "AUTH", Value: "<>"}}, false},
		{"K=~!\"#", []Param{{Key: "K", Value: "~!\"#"}}, false},
		{"K=é", []Param{{Key: "K", Value: "é"}}, false}, // RFC 6531: UTF-8 in values
		{"SIZE=", nil, true}, // empty value
		{"SIZE==1", nil, true},
		{"A=b=c", nil, true}, // '=' in value
		{"=x", nil, true},
		{"-X=1", nil, true}, // keyword starts with Let-dig
		{"X_Y=1", nil, true},
		{"K=a\x7f", nil, true},
		{"K=a\tb", nil, true}, // a tab is not a separator
		{"K=a\x00", nil, true},
		{"é=1", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseParams(tt.in)
		if tt.bad {
			if err != ErrParamSyntax {
				t.Errorf("ParseParams(%q) = %+v, %v; want ErrParamSyntax", tt.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseParams(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}
